//! Money as integers: amounts in nano-dollars, prices in micro-dollars per million tokens, so
//! that sums over millions of requests are exact and a report's totals equal its rows' sums.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

/// An amount of US dollars, in nano-dollars (10⁻⁹ USD). Signed: savings can be negative when the
/// route taken costs more than the reference model would have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

const NANOS_PER_USD: i64 = 1_000_000_000;

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// The nearest amount to a decimal dollar figure from a file (a budget): `None` when it is
    /// not a finite number or is beyond ±9 billion dollars.
    pub fn from_dollars(usd: f64) -> Option<Self> {
        let nanos = (usd * NANOS_PER_USD as f64).round();
        (nanos.is_finite() && nanos.abs() < i64::MAX as f64).then_some(Self(nanos as i64))
    }

    /// For metrics and JSON, where a float is the format's only number.
    pub fn as_dollars(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD as f64
    }

    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, other: Usd) {
        *self = *self + other;
    }
}

impl Sub for Usd {
    type Output = Usd;
    fn sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, Add::add)
    }
}

/// Dollars with nine decimals, trailing zeros dropped after the sixth: `0.000123`,
/// `-1.5`, `0.000000150`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / NANOS_PER_USD as u64;
        let fraction = format!("{:09}", abs % NANOS_PER_USD as u64);
        let keep = fraction.trim_end_matches('0').len().max(6);
        write!(f, "{sign}{whole}.{}", &fraction[..keep])
    }
}

/// Stored as nano-dollars (an integer) in the ledger and in JSON, so nothing is lost on the way.
impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(Usd)
    }
}

/// A model's price, as written in the policy file: USD per million input (prompt) and output
/// (completion) tokens. Held as whole micro-dollars per million tokens, so any price with up to
/// six decimals is exact and a token's cost is an exact number of nano-dollars times 10⁻³.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    input_micros_per_mtok: u64,
    output_micros_per_mtok: u64,
}

/// What a price in the file must be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0} is not a price: give USD per million tokens, 0 or more, at most 1,000,000")]
pub struct BadPrice(pub f64);

impl Price {
    pub const FREE: Price = Price {
        input_micros_per_mtok: 0,
        output_micros_per_mtok: 0,
    };

    /// From USD per million tokens.
    pub fn per_million_tokens(input_usd: f64, output_usd: f64) -> Result<Self, BadPrice> {
        let micros = |usd: f64| {
            if usd.is_finite() && (0.0..=1_000_000.0).contains(&usd) {
                Ok((usd * 1e6).round() as u64)
            } else {
                Err(BadPrice(usd))
            }
        };
        Ok(Self {
            input_micros_per_mtok: micros(input_usd)?,
            output_micros_per_mtok: micros(output_usd)?,
        })
    }

    /// The cost of a request's tokens, rounded to the nearest nano-dollar.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Usd {
        // micro-USD per 10⁶ tokens = nano-USD per 10³ tokens.
        let thousandths = u128::from(prompt_tokens) * u128::from(self.input_micros_per_mtok)
            + u128::from(completion_tokens) * u128::from(self.output_micros_per_mtok);
        let nanos = (thousandths + 500) / 1000;
        Usd(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    pub fn is_free(&self) -> bool {
        *self == Price::FREE
    }

    pub fn input_per_mtok(&self) -> f64 {
        self.input_micros_per_mtok as f64 / 1e6
    }

    pub fn output_per_mtok(&self) -> f64 {
        self.output_micros_per_mtok as f64 / 1e6
    }
}

/// `{input_per_mtok: 0.15, output_per_mtok: 0.6}` in the file.
impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            input_per_mtok: f64,
            output_per_mtok: f64,
        }
        let written = Written::deserialize(d)?;
        Price::per_million_tokens(written.input_per_mtok, written.output_per_mtok)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_for_prices_with_up_to_six_decimals() {
        let price = Price::per_million_tokens(0.15, 0.6).unwrap();
        // 1,000 prompt tokens at $0.15/M = $0.00015; 500 completion tokens at $0.6/M = $0.0003.
        assert_eq!(price.cost(1000, 500), Usd::from_nanos(450_000));
        assert_eq!(price.cost(1, 0), Usd::from_nanos(150));
        let odd = Price::per_million_tokens(0.0375, 0.000001).unwrap();
        assert_eq!(odd.cost(1_000_000, 1_000_000), Usd::from_nanos(37_501_000));
        // A million requests of one token each sum to the cost of one request of a million.
        let one: Usd = (0..1_000_000).map(|_| price.cost(1, 0)).sum();
        assert_eq!(one, price.cost(1_000_000, 0));
    }

    #[test]
    fn bad_prices_are_refused() {
        assert!(Price::per_million_tokens(-1.0, 0.0).is_err());
        assert!(Price::per_million_tokens(0.0, f64::NAN).is_err());
        assert!(Price::per_million_tokens(0.0, f64::INFINITY).is_err());
        let err: Result<Price, _> =
            serde_yaml::from_str("{input_per_mtok: -2, output_per_mtok: 1}");
        assert!(err.unwrap_err().to_string().contains("-2 is not a price"));
    }

    #[test]
    fn amounts_print_as_dollars() {
        assert_eq!(Usd::from_nanos(450_000).to_string(), "0.000450");
        assert_eq!(Usd::from_nanos(150).to_string(), "0.00000015");
        assert_eq!(Usd::from_nanos(-1_500_000_000).to_string(), "-1.500000");
        assert_eq!(Usd::from_dollars(12.34).unwrap().to_string(), "12.340000");
        assert_eq!(Usd::from_dollars(f64::NAN), None);
    }
}
