//! Problems in a policy file, each at a path (`routing.tiers[1].targets[0]`) that
//! [`locate`] turns into the line and column of the text it came from.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the file: a mapping's key or a list's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Where in the file's structure a problem is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// `routing.tiers` from `KeyPath::root().key("routing").key("tiers")`.
    pub fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        Self(steps)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        Self(steps)
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => write!(f, "{key}")?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One thing wrong with a file, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A line and a column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where `path` starts in the YAML `text`; for a path that is not there (a missing key), where
/// its deepest existing parent starts.
pub fn locate(text: &str, path: &KeyPath) -> Option<Location> {
    (0..=path.steps().len()).rev().find_map(|depth| {
        let seed = Seek(&path.steps()[..depth]);
        // The seeker stops with an error at the node it was looking for: the YAML deserializer
        // marks every error with the position of the node it was reading.
        let error = seed
            .deserialize(serde_yaml::Deserializer::from_str(text))
            .err()?;
        (error.to_string().contains(FOUND)).then_some(())?;
        let mark = error.location()?;
        Some(Location {
            line: mark.line(),
            column: mark.column(),
        })
    })
}

const FOUND: &str = "switchboard: the node sought is here";

/// Walks a document to the node at its path.
struct Seek<'a>(&'a [Step]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Seek<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        match self.0 {
            [] => Err(E::custom(FOUND)),
            _ => Ok(()),
        }
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        while let Some(key) = map.next_key::<KeyText>()? {
            match first {
                Step::Key(wanted) if *wanted == key.0 => map.next_value_seed(Seek(rest))?,
                _ => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let mut index = 0;
        loop {
            let more = match first {
                Step::Index(wanted) if *wanted == index => {
                    seq.next_element_seed(Seek(rest))?.is_some()
                }
                _ => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

/// A mapping key of any scalar type, as text (`0.5:` and `true:` are keys too).
struct KeyText(String);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
listen: 127.0.0.1:8080
routing:
  tiers:
    - name: local
      targets: [m1, m2]
    - name: remote
      targets:
        - r1
        - r2
  domains: {legal: {route: remote}}
";

    fn at(path: &KeyPath) -> String {
        locate(TEXT, path).unwrap().to_string()
    }

    #[test]
    fn paths_resolve_to_the_line_and_column_of_their_node() {
        let tiers = KeyPath::root().key("routing").key("tiers");
        assert_eq!(at(&KeyPath::root().key("listen")), "1:9");
        assert_eq!(at(&tiers.index(0).key("targets").index(1)), "5:21");
        assert_eq!(at(&tiers.index(1).key("targets").index(1)), "9:11");
        assert_eq!(at(&tiers.index(1)), "6:7");
        let legal = KeyPath::root().key("routing").key("domains").key("legal");
        assert_eq!(at(&legal.key("route")), "10:28");
        assert_eq!(
            tiers.index(1).key("targets").to_string(),
            "routing.tiers[1].targets"
        );
    }

    #[test]
    fn a_missing_node_resolves_to_its_deepest_parent() {
        let missing = KeyPath::root()
            .key("routing")
            .key("tiers")
            .index(7)
            .key("x");
        assert_eq!(at(&missing), "4:5");
        assert_eq!(at(&KeyPath::root().key("nothing")), "1:1");
    }
}
