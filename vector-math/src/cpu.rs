//! Which vector extensions this CPU has, asked once: each engine picks its kernel level from
//! them (the router's BF16 products, the local engine's VNNI ones).

use std::sync::OnceLock;

/// The x86-64 extensions that Switchboard's kernels use; all false elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub avx512bf16: bool,
}

impl Features {
    /// This CPU's, detected on the first call.
    pub fn detect() -> Self {
        static DETECTED: OnceLock<Features> = OnceLock::new();
        *DETECTED.get_or_init(Self::ask_the_cpu)
    }

    #[cfg(target_arch = "x86_64")]
    fn ask_the_cpu() -> Self {
        use std::arch::is_x86_feature_detected as has;
        Self {
            avx2: has!("avx2"),
            fma: has!("fma"),
            f16c: has!("f16c"),
            avx512f: has!("avx512f"),
            avx512bw: has!("avx512bw"),
            avx512vl: has!("avx512vl"),
            avx512vnni: has!("avx512vnni"),
            avx512bf16: has!("avx512bf16"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn ask_the_cpu() -> Self {
        Self::default()
    }
}
