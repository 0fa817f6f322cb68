//! A real PostgreSQL server (Debian's `postgresql`, which `test.sh` installs) for the fleet
//! tests: a fresh cluster (`initdb`) in a throwaway directory, on 127.0.0.1 and a port of its
//! own, trusting local connections; stopped when dropped, and stoppable and restartable on the
//! same data to test outages. PostgreSQL refuses to run as root, so under root it runs as the
//! `postgres` user that Debian's package creates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// Where Debian puts the server's programs: `/usr/lib/postgresql/<version>/bin`.
fn program(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian's postgresql; ./test.sh installs it)");
    let mut dirs: Vec<PathBuf> = versions.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    let bin = dirs
        .pop()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name);
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when this process is root.
fn command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub fn start() -> Self {
        let port = super::free_port();
        // Under the system's temporary directory, which the `postgres` user can reach
        // (a checkout under /root, say, it could not).
        let dir = std::env::temp_dir().join(format!(
            "switchboard-test-postgres-{port}-{:08x}",
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if running_as_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let initdb = command(&program("initdb"))
            .args([
                "--auth=trust",
                "--username=switchboard",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(initdb.success(), "initdb failed");
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// A URL for tokio-postgres: user `switchboard`, database `postgres`.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=switchboard dbname=postgres connect_timeout=2",
            self.port
        )
    }

    /// Starts the server (again) on its port and data, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let child = command(&program("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(program("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): clients' connections break.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = command(&program("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.dir.join("data"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs SQL with `psql`; its output (unaligned, tuples only), trimmed.
    pub fn psql(&self, sql: &str) -> String {
        let output = Command::new(program("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "switchboard", "-d", "postgres", "-At", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
