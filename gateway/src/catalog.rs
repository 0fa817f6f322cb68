//! The models clients can ask for, each with its fallback chain of provider targets.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
use crate::providers::{Provider, Target};

pub struct Catalog {
    providers: Vec<Arc<Provider>>,
    /// Model name → its chain: the model itself first, then its fallbacks in order.
    chains: BTreeMap<String, Vec<Target>>,
}

impl Catalog {
    /// Builds the catalog of a validated config; provider keys are read through `env`.
    pub fn new(config: &Config, env: impl Fn(&str) -> Option<String>) -> Self {
        let providers: Vec<Arc<Provider>> = config
            .providers
            .iter()
            .map(|p| Arc::new(Provider::new(p, &env)))
            .collect();
        let mut targets = BTreeMap::new();
        for (provider, provider_config) in providers.iter().zip(&config.providers) {
            for model in &provider_config.models {
                let target = Target {
                    provider: provider.clone(),
                    model: model.clone(),
                };
                targets.insert(model.name.clone(), target);
            }
        }
        let chains = targets
            .values()
            .map(|target| {
                let fallbacks = target.model.fallbacks.iter();
                let chain = std::iter::once(target)
                    .chain(fallbacks.filter_map(|name| targets.get(name)))
                    .cloned()
                    .collect();
                (target.model.name.clone(), chain)
            })
            .collect();
        Self { providers, chains }
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The chain of a model that can answer now (some target has its key).
    pub fn usable_chain(&self, model: &str) -> Option<&[Target]> {
        self.chains
            .get(model)
            .map(Vec::as_slice)
            .filter(|chain| chain.iter().any(|t| t.provider.is_usable()))
    }

    /// Every model that can answer now, with the provider that answers first.
    pub fn usable_models(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.chains
            .iter()
            .filter(|(name, _)| self.usable_chain(name).is_some())
            .map(|(name, chain)| (name.as_str(), &chain[0]))
    }

    /// Whether `model` is configured at all, usable or not.
    pub fn contains(&self, model: &str) -> bool {
        self.chains.contains_key(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_follow_fallbacks_and_keyless_models_are_not_usable() {
        let config = Config::from_yaml(
            r#"
providers:
  - name: a
    kind: openai
    base_url: http://a/v1
    api_key_env: A_KEY
    models:
      - { name: m1, price: { input_per_mtok: 1, output_per_mtok: 1 }, fallbacks: [m2] }
  - name: b
    kind: anthropic
    base_url: http://b
    models:
      - { name: m2, price: { input_per_mtok: 1, output_per_mtok: 1 } }
"#,
            "test",
        )
        .unwrap();
        let catalog = Catalog::new(&config, |_| None);
        let chain = catalog.usable_chain("m1").unwrap();
        let names: Vec<_> = chain.iter().map(|t| t.model.name.as_str()).collect();
        assert_eq!(names, ["m1", "m2"]);
        assert_eq!(catalog.usable_models().count(), 2);

        let config = Config::from_yaml(
            "providers: [{name: a, kind: openai, base_url: 'http://a/v1', api_key_env: A_KEY, models: [{name: m1, price: {input_per_mtok: 1, output_per_mtok: 1}}]}]",
            "test",
        )
        .unwrap();
        let catalog = Catalog::new(&config, |_| None);
        assert!(catalog.usable_chain("m1").is_none());
        assert!(catalog.contains("m1"));
        let catalog = Catalog::new(&config, |_| Some("k".into()));
        assert!(catalog.usable_chain("m1").is_some());
    }
}
