//! What parsing alone cannot catch: duplicates, dangling references, values out of range.
//! The routing rules and tenants' budgets are checked where they are built
//! ([`Config::policy_rules`]).

use std::collections::{HashMap, HashSet};

use switchboard_policies::problems::{KeyPath, Problem};

use super::{Config, DEFAULT_EMBEDDING_MODEL, DEFAULT_LOCAL_MODEL};
use crate::keys::KeyHash;

/// Every model name of the file, from any section, with the provider that serves it
/// (`usize::MAX` for a model of this machine): a name is used once.
type ModelNames<'a> = HashMap<&'a str, usize>;

impl Config {
    /// Every problem that parsing alone cannot catch, each at its path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut model_owner = ModelNames::new();
        self.check_limits(&mut problems);
        self.check_providers(&mut model_owner, &mut problems);
        self.check_local_models(&mut model_owner, &mut problems);
        self.check_embedding_models(&mut model_owner, &mut problems);
        self.check_router(&mut problems);
        self.check_tenants(&model_owner, &mut problems);
        self.check_fleet(&mut problems);
        problems
    }

    /// `fleet:`: a replica count, a hold that outlives every request, a URL variable's name,
    /// and budgets that Redis's scripts count exactly.
    fn check_fleet(&self, problems: &mut Vec<Problem>) {
        let Some(fleet) = &self.fleet else {
            return;
        };
        let at = KeyPath::root().key("fleet");
        let mut problem =
            |path: KeyPath, message: String| problems.push(Problem::new(path, message));
        if fleet.replicas == 0 {
            problem(at.key("replicas"), "must be at least 1".to_owned());
        }
        let request_timeout = self.limits.request_timeout;
        if fleet.hold_ttl(request_timeout) <= request_timeout {
            problem(
                at.key("hold_ttl"),
                format!(
                    "must be longer than limits.request_timeout ({} s), or a running request's estimate lapses",
                    request_timeout.as_secs_f64()
                ),
            );
        }
        let redis = &fleet.redis;
        let at = at.key("redis");
        if redis.url_env.is_empty() || redis.url_env.contains('=') {
            problem(
                at.key("url_env"),
                "must be the NAME of an environment variable".to_owned(),
            );
        }
        if redis.key_prefix.is_empty() || redis.key_prefix.contains(char::is_whitespace) {
            problem(
                at.key("key_prefix"),
                "must be non-empty, without spaces".to_owned(),
            );
        }
        if redis.timeout.is_zero() {
            problem(at.key("timeout"), "must be above 0".to_owned());
        }
        if let Some(postgres) = &fleet.postgres {
            let at = KeyPath::root().key("fleet").key("postgres");
            if postgres.url_env.is_empty() || postgres.url_env.contains('=') {
                problem(
                    at.key("url_env"),
                    "must be the NAME of an environment variable".to_owned(),
                );
            }
            if postgres.flush_every_ms == 0 {
                problem(at.key("flush_every_ms"), "must be above 0".to_owned());
            }
            if postgres.batch_rows == 0 {
                problem(at.key("batch_rows"), "must be above 0".to_owned());
            }
            if postgres.timeout.is_zero() {
                problem(at.key("timeout"), "must be above 0".to_owned());
            }
            if postgres.reconcile_every.is_zero() {
                problem(at.key("reconcile_every"), "must be above 0".to_owned());
            }
        }
        // Redis's scripts compute in doubles: amounts are exact below 2^53 nano-dollars.
        const LARGEST_USD: f64 = 9_000_000.0;
        for (t, tenant) in self.tenants.iter().enumerate() {
            let Some(budget) = &tenant.budget else {
                continue;
            };
            let limits = [
                ("daily_usd", budget.daily_usd),
                ("monthly_usd", budget.monthly_usd),
            ];
            for (key, limit) in limits {
                if limit.is_some_and(|usd| usd > LARGEST_USD) {
                    let at = KeyPath::root()
                        .key("tenants")
                        .index(t)
                        .key("budget")
                        .key(key);
                    problem(at, format!("must be at most {LARGEST_USD} in fleet mode"));
                }
            }
        }
    }

    /// `limits:` and `upstream:`: sizes, counts and timeouts above 0.
    fn check_limits(&self, problems: &mut Vec<Problem>) {
        let root = KeyPath::root();
        let mut problem =
            |path: KeyPath, message: String| problems.push(Problem::new(path, message));
        let limits = &self.limits;
        let at = root.key("limits");
        if limits.max_body_bytes == 0 {
            problem(at.key("max_body_bytes"), "must be above 0".to_owned());
        }
        if limits.max_in_flight == 0 {
            problem(at.key("max_in_flight"), "must be above 0".to_owned());
        }
        if limits.max_connections == 0 {
            problem(at.key("max_connections"), "must be above 0".to_owned());
        }
        let timeouts = [
            ("request_timeout", limits.request_timeout),
            ("header_timeout", limits.header_timeout),
            ("body_timeout", limits.body_timeout),
            ("send_timeout", limits.send_timeout),
        ];
        for (key, timeout) in timeouts {
            if timeout.is_zero() {
                problem(at.key(key), "must be above 0".to_owned());
            }
        }
        if self.upstream.retry.max_attempts == 0 {
            let at = root.key("upstream").key("retry").key("max_attempts");
            problem(at, "must be at least 1".to_owned());
        }
    }

    /// `providers:`: names, URLs, key variables, headers, models and their fallbacks.
    fn check_providers<'a>(
        &'a self,
        model_owner: &mut ModelNames<'a>,
        problems: &mut Vec<Problem>,
    ) {
        let root = KeyPath::root();
        let mut problem =
            |path: KeyPath, message: String| problems.push(Problem::new(path, message));
        let mut provider_names = HashSet::new();
        for (p, provider) in self.providers.iter().enumerate() {
            let at = root.key("providers").index(p);
            if provider.name.is_empty() {
                problem(at.key("name"), "is empty".to_owned());
            }
            if !provider_names.insert(provider.name.as_str()) {
                let message = format!("provider name '{}' is used twice", provider.name);
                problem(at.key("name"), message);
            }
            let base_url = at.key("base_url");
            match reqwest::Url::parse(&provider.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => problem(
                    base_url,
                    format!("scheme '{}' is not http or https", url.scheme()),
                ),
                Err(e) => problem(base_url, e.to_string()),
            }
            if let Some(var) = &provider.api_key_env
                && (var.is_empty() || var.contains('='))
            {
                problem(
                    at.key("api_key_env"),
                    "must be the NAME of an environment variable".to_owned(),
                );
            }
            for (name, header) in provider
                .headers
                .keys()
                .map(|name| (name, at.key("headers").key(name)))
                .chain(
                    provider
                        .api_key_header
                        .iter()
                        .map(|n| (n, at.key("api_key_header"))),
                )
            {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problem(header, format!("'{name}' is not a valid header name"));
                }
            }
            for (name, value) in &provider.headers {
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    let message = "not a valid header value".to_owned();
                    problem(at.key("headers").key(name), message);
                }
            }
            if provider.models.is_empty() {
                problem(at.key("models"), "is empty".to_owned());
            }
            for (m, model) in provider.models.iter().enumerate() {
                let at = at.key("models").index(m);
                if model_owner.insert(&model.name, p).is_some() {
                    let message = format!("model name '{}' is used twice", model.name);
                    problem(at.key("name"), message);
                }
                if model.default_max_tokens == Some(0) {
                    problem(at.key("default_max_tokens"), "must be above 0".to_owned());
                }
                if model.context_window == Some(0) {
                    problem(at.key("context_window"), "must be above 0".to_owned());
                }
            }
        }
        for (p, provider) in self.providers.iter().enumerate() {
            for (m, model) in provider.models.iter().enumerate() {
                let mut seen = HashSet::new();
                for (f, fallback) in model.fallbacks.iter().enumerate() {
                    let at = root.key("providers").index(p).key("models").index(m);
                    let at = at.key("fallbacks").index(f);
                    if fallback == &model.name {
                        problem(at.clone(), "a model cannot fall back to itself".to_owned());
                    } else if !model_owner.contains_key(fallback.as_str()) {
                        let message = format!("fallback '{fallback}' is not a configured model");
                        problem(at.clone(), message);
                    }
                    if !seen.insert(fallback) {
                        problem(at, format!("fallback '{fallback}' is listed twice"));
                    }
                }
            }
        }
    }

    /// `local_models:`: a default model or a path, or servers (each an http URL, with room
    /// for requests), and room to queue and batch.
    fn check_local_models<'a>(
        &'a self,
        model_owner: &mut ModelNames<'a>,
        problems: &mut Vec<Problem>,
    ) {
        for (l, local) in self.local_models.iter().enumerate() {
            let at = KeyPath::root().key("local_models").index(l);
            let model = OwnModel {
                name: &local.name,
                default_model: local.default_model.as_deref(),
                has_path: local.path.is_some(),
                answered_elsewhere: !local.servers.is_empty(),
            };
            model.check(
                &at,
                ("language", DEFAULT_LOCAL_MODEL),
                model_owner,
                problems,
            );
            if local.queue_capacity == 0 {
                problems.push(Problem::new(at.key("queue_capacity"), "must be above 0"));
            }
            if local.max_batch == 0 {
                problems.push(Problem::new(at.key("max_batch"), "must be above 0"));
            }
            if local.servers.is_empty() {
                continue;
            }
            if !local.runs_in_process() && local.max_context.is_none() {
                let message = "give the servers' context window: a model answered by servers only has no model file to read it from";
                problems.push(Problem::new(at.key("max_context"), message));
            }
            if local.health_every.is_zero() {
                problems.push(Problem::new(at.key("health_every"), "must be above 0"));
            }
            // A server is named by its host and port in metrics and logs.
            let mut addresses = HashSet::new();
            for (s, server) in local.servers.iter().enumerate() {
                let at = at.key("servers").index(s);
                let url = reqwest::Url::parse(&server.url).ok();
                let url = url.filter(|url| matches!(url.scheme(), "http" | "https"));
                let address = url.and_then(|url| {
                    Some((url.host_str()?.to_owned(), url.port_or_known_default()?))
                });
                match address {
                    // Not echoed: a URL may carry a password.
                    None => problems.push(Problem::new(at.key("url"), "must be an http(s) URL")),
                    Some((host, port)) if !addresses.insert((host.clone(), port)) => {
                        let message = format!("{host}:{port} is listed twice");
                        problems.push(Problem::new(at.key("url"), message));
                    }
                    Some(_) => {}
                }
                if server.max_in_flight == 0 {
                    problems.push(Problem::new(at.key("max_in_flight"), "must be above 0"));
                }
                if let Some(env) = &server.api_key_env
                    && (env.is_empty() || env.contains('='))
                {
                    let message = "must be the NAME of an environment variable";
                    problems.push(Problem::new(at.key("api_key_env"), message));
                }
            }
        }
    }

    /// `embedding_models:`: a default model or a path.
    fn check_embedding_models<'a>(
        &'a self,
        model_owner: &mut ModelNames<'a>,
        problems: &mut Vec<Problem>,
    ) {
        for (e, embedding) in self.embedding_models.iter().enumerate() {
            let at = KeyPath::root().key("embedding_models").index(e);
            let model = OwnModel {
                name: &embedding.name,
                default_model: embedding.default_model.as_deref(),
                has_path: embedding.path.is_some(),
                answered_elsewhere: false,
            };
            model.check(
                &at,
                ("embedding", DEFAULT_EMBEDDING_MODEL),
                model_owner,
                problems,
            );
        }
    }

    /// `router:`: a configured embedding model, and custom domains with examples.
    fn check_router(&self, problems: &mut Vec<Problem>) {
        let root = KeyPath::root();
        let mut problem =
            |path: KeyPath, message: String| problems.push(Problem::new(path, message));
        if let Some(router) = &self.router {
            let at = root.key("router");
            if !self
                .embedding_models
                .iter()
                .any(|m| m.name == router.embedding_model)
            {
                problem(
                    at.key("embedding_model"),
                    format!(
                        "'{}' is not one of embedding_models",
                        router.embedding_model
                    ),
                );
            }
            for (name, examples) in &router.domains {
                let at = at.key("domains").key(name);
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problem(
                        at.clone(),
                        format!("'{name}' is not a domain name (letters, digits and _)"),
                    );
                }
                if examples.iter().all(|e| e.trim().is_empty()) {
                    problem(at, "give at least one example".to_owned());
                }
            }
        }
    }

    /// `tenants:`: names, key hashes used once, models that exist, rate limits above 0.
    fn check_tenants<'a>(&'a self, model_owner: &ModelNames<'a>, problems: &mut Vec<Problem>) {
        let root = KeyPath::root();
        let mut problem =
            |path: KeyPath, message: String| problems.push(Problem::new(path, message));
        let mut tenant_names = HashSet::new();
        let mut hashes = HashSet::new();
        for (t, tenant) in self.tenants.iter().enumerate() {
            let at = root.key("tenants").index(t);
            if tenant.name.is_empty() {
                problem(at.key("name"), "is empty".to_owned());
            } else if tenant.name.chars().any(char::is_control) {
                problem(at.key("name"), "holds a control character".to_owned());
            }
            if !tenant_names.insert(tenant.name.as_str()) {
                let message = format!("tenant name '{}' is used twice", tenant.name);
                problem(at.key("name"), message);
            }
            if tenant.api_key_hashes.is_empty() {
                problem(at.key("api_key_hashes"), "is empty".to_owned());
            }
            for (h, hash) in tenant.api_key_hashes.iter().enumerate() {
                let at = at.key("api_key_hashes").index(h);
                match hash.parse::<KeyHash>() {
                    Ok(parsed) => {
                        if !hashes.insert(parsed) {
                            problem(at, format!("key hash {hash} is used twice"));
                        }
                    }
                    Err(e) => problem(at, e.to_string()),
                }
            }
            for (m, model) in tenant.allowed_models.iter().enumerate() {
                let routing_model = self.routing.as_ref().map(|r| r.model.as_str());
                if model != "*"
                    && !model_owner.contains_key(model.as_str())
                    && Some(model.as_str()) != routing_model
                {
                    problem(
                        at.key("allowed_models").index(m),
                        format!("'{model}' is not a configured model"),
                    );
                }
            }
            if let Some(limit) = tenant.rate_limit
                && limit.requests_per_minute == 0
            {
                let at = at.key("rate_limit").key("requests_per_minute");
                problem(at, "must be above 0".to_owned());
            }
        }
    }
}

/// A model of this machine, as configured: a default model that Switchboard fetches, or a
/// path.
struct OwnModel<'a> {
    name: &'a str,
    default_model: Option<&'a str>,
    has_path: bool,
    /// Servers answer it, so that it needs no model file of its own.
    answered_elsewhere: bool,
}

impl<'a> OwnModel<'a> {
    /// Its name is used once, and it gives exactly one of a default model (`known`, of its
    /// `kind`) and a path, or neither when it is answered elsewhere.
    fn check(
        &self,
        at: &KeyPath,
        (kind, known): (&str, &str),
        model_owner: &mut ModelNames<'a>,
        problems: &mut Vec<Problem>,
    ) {
        if model_owner.insert(self.name, usize::MAX).is_some() {
            let message = format!("model name '{}' is used twice", self.name);
            problems.push(Problem::new(at.key("name"), message));
        }
        match (self.default_model, self.has_path) {
            (Some(id), false) if id != known => problems.push(Problem::new(
                at.key("default_model"),
                format!("'{id}' is not a default {kind} model (known: {known})"),
            )),
            (Some(_), false) | (None, true) => {}
            (None, false) if self.answered_elsewhere => {}
            (None, false) if kind == "language" => problems.push(Problem::new(
                at.clone(),
                "give exactly one of default_model and path, or servers",
            )),
            _ => problems.push(Problem::new(
                at.clone(),
                "give exactly one of default_model and path",
            )),
        }
    }
}
