//! A generated test set for the PII scanner: help-desk sentences holding private data of every
//! kind in several formats, next to look-alikes that are not private data (order and ticket
//! numbers, dates, versions, prices, card numbers that fail Luhn, IBANs that fail mod-97, SSNs
//! in ranges never issued). Generated from a seed, so a run is repeatable and a reviewer can
//! make more.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use switchboard_router::pii::{PiiKind, scan};

/// A sentence and the private data in it.
pub struct Case {
    pub text: String,
    pub expected: Vec<(PiiKind, Range<usize>)>,
}

/// Precision and recall of the scanner on a test set, per kind and overall.
#[derive(Debug, Clone, Default)]
pub struct PiiScore {
    /// `(kind, true positives, false positives, false negatives)`.
    pub by_kind: Vec<(PiiKind, usize, usize, usize)>,
    /// Whole messages, flagged or not: `(true positives, false positives, false negatives)`.
    pub by_message: (usize, usize, usize),
}

impl PiiScore {
    fn totals(&self) -> (usize, usize, usize) {
        self.by_kind
            .iter()
            .fold((0, 0, 0), |(t, p, n), k| (t + k.1, p + k.2, n + k.3))
    }

    pub fn precision(&self) -> f64 {
        let (tp, fp, _) = self.totals();
        tp as f64 / (tp + fp).max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        let (tp, _, fn_) = self.totals();
        tp as f64 / (tp + fn_).max(1) as f64
    }
}

impl fmt::Display for PiiScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "PII: precision {:.3}, recall {:.3}",
            self.precision(),
            self.recall()
        )?;
        let (tp, fp, fn_) = self.by_message;
        writeln!(
            f,
            "    messages with private data: precision {:.3}, recall {:.3} ({tp} flagged rightly, {fp} wrongly, {fn_} missed)",
            ratio(tp, tp + fp),
            ratio(tp, tp + fn_),
        )?;
        for (kind, tp, fp, fn_) in &self.by_kind {
            writeln!(
                f,
                "    {:<16} precision {:.3}, recall {:.3}: found {tp:>4}, wrongly flagged {fp:>3}, missed {fn_:>3}",
                kind.as_str(),
                ratio(*tp, tp + fp),
                ratio(*tp, tp + fn_),
            )?;
        }
        Ok(())
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// Scans every case: a finding counts as right when an expected finding of its kind overlaps it.
pub fn score(cases: &[Case]) -> PiiScore {
    let mut by_message = (0, 0, 0);
    // Kind → (true positives, false positives, false negatives).
    let mut counts: BTreeMap<PiiKind, (usize, usize, usize)> = BTreeMap::new();
    for case in cases {
        let found = scan(&case.text);
        match (!found.is_empty(), !case.expected.is_empty()) {
            (true, true) => by_message.0 += 1,
            (true, false) => by_message.1 += 1,
            (false, true) => by_message.2 += 1,
            (false, false) => {}
        }
        let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
        for f in &found {
            let right = case
                .expected
                .iter()
                .any(|(kind, span)| *kind == f.kind && overlaps(span, &f.span));
            let entry = counts.entry(f.kind).or_default();
            if right {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        for (kind, span) in &case.expected {
            if !found
                .iter()
                .any(|f| f.kind == *kind && overlaps(span, &f.span))
            {
                counts.entry(*kind).or_default().2 += 1;
            }
        }
    }
    PiiScore {
        by_kind: counts
            .into_iter()
            .map(|(kind, (tp, fp, fn_))| (kind, tp, fp, fn_))
            .collect(),
        by_message,
    }
}

/// `count` sentences from `seed`.
pub fn generate(count: usize, seed: u64) -> Vec<Case> {
    let mut random = fastrand::Rng::with_seed(seed);
    (0..count).map(|_| case(&mut random)).collect()
}

/// Sentence frames: `{}` takes private data, `{n}` a look-alike.
const FRAMES: [&str; 10] = [
    "Hi, please update my contact to {} and close ticket {n}.",
    "The payment with {} failed twice, order {n}, can you check?",
    "User {} cannot log in since {n}; please reset the account.",
    "Refund to {} please, the amount on invoice {n} was wrong.",
    "My details: {}. Reference {n}.",
    "{} keeps appearing in the error log after the upgrade to {n}.",
    "Can HR change the record {} to match the form from {n}?",
    "Forwarding {} as discussed in the meeting on {n}.",
    "Is it safe to paste {} here? The auditor asked on {n}.",
    "Please whitelist {} for the VPN, change request {n}.",
];

fn case(random: &mut fastrand::Rng) -> Case {
    let frame = FRAMES[random.usize(..FRAMES.len())];
    let (kind, value) = private_value(random);
    let look_alike = look_alike(random);
    let at = frame.find("{}").expect("every frame has a slot");
    let text = frame
        .replacen("{}", &value, 1)
        .replacen("{n}", &look_alike, 1);
    Case {
        text,
        expected: vec![(kind, at..at + value.len())],
    }
}

fn digits(random: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + random.u8(0..10)))
        .collect()
}

fn private_value(random: &mut fastrand::Rng) -> (PiiKind, String) {
    const NAMES: [&str; 6] = [
        "anna.berg",
        "j.smith",
        "li_wei",
        "m.rossi+it",
        "omar",
        "k.tanaka",
    ];
    const DOMAINS: [&str; 4] = ["example.com", "acme.co.uk", "corp.example.org", "mail.de"];
    match random.u8(0..7) {
        0 => (
            PiiKind::Email,
            format!(
                "{}@{}",
                NAMES[random.usize(..NAMES.len())],
                DOMAINS[random.usize(..DOMAINS.len())]
            ),
        ),
        1 => (PiiKind::Phone, phone(random)),
        2 => (PiiKind::Iban, iban(random, true)),
        3 => (PiiKind::PaymentCard, card(random, true)),
        4 => (PiiKind::UsSsn, ssn(random, true)),
        5 => (PiiKind::IpAddress, ip_address(random)),
        _ => (PiiKind::Secret, secret(random)),
    }
}

fn look_alike(random: &mut fastrand::Rng) -> String {
    match random.u8(0..12) {
        9 => format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            random.u8(..),
            random.u8(..),
            random.u8(..),
            random.u8(..),
            random.u8(..),
            random.u8(..)
        ),
        10 => format!(
            "{:02}:{:02}:{:02}",
            random.u8(0..24),
            random.u8(0..60),
            random.u8(0..60)
        ),
        11 => format!("build {}", digits(random, 8)),
        0 => format!("#{}", digits(random, 6)),
        1 => format!("INC{}", digits(random, 7)),
        2 => format!("2025-{:02}-{:02}", random.u8(1..13), random.u8(1..29)),
        3 => format!(
            "version {}.{}.{}",
            random.u8(1..20),
            random.u8(0..10),
            random.u8(0..30)
        ),
        4 => format!(
            "${},{}.{}",
            random.u8(1..10),
            digits(random, 3),
            digits(random, 2)
        ),
        5 => card(random, false),
        6 => iban(random, false),
        7 => ssn(random, false),
        _ => format!("PO-{}-{}", random.u16(2000..2030), digits(random, 5)),
    }
}

fn phone(random: &mut fastrand::Rng) -> String {
    let area = random.u16(201..990);
    let exchange = random.u16(200..999);
    let line = digits(random, 4);
    match random.u8(0..5) {
        0 => format!("+1 {area} {exchange} {line}"),
        1 => format!("({area}) {exchange}-{line}"),
        2 => format!("{area}-{exchange}-{line}"),
        3 => format!("+44 20 {} {}", digits(random, 4), digits(random, 4)),
        _ => format!("+49 30 {}", digits(random, 7)),
    }
}

/// An IBAN of Germany or the Netherlands whose check digits are right (or deliberately wrong).
fn iban(random: &mut fastrand::Rng, valid: bool) -> String {
    let (country, bban) = if random.bool() {
        ("DE", digits(random, 18))
    } else {
        const BANKS: [&str; 3] = ["ABNA", "INGB", "RABO"];
        (
            "NL",
            format!(
                "{}{}",
                BANKS[random.usize(..BANKS.len())],
                digits(random, 10)
            ),
        )
    };
    let rearranged = format!("{bban}{country}00");
    let remainder = rearranged.chars().fold(0u64, |r, c| {
        let value = c.to_digit(36).expect("alphanumeric") as u64;
        let width = if value >= 10 { 100 } else { 10 };
        (r * width + value) % 97
    });
    let mut check = 98 - remainder;
    if !valid {
        check = (check + 1 + u64::from(random.u8(0..90))) % 97 + 2;
        if check == 98 - remainder {
            check = if check == 2 { 3 } else { check - 1 };
        }
    }
    let compact = format!("{country}{check:02}{bban}");
    if random.bool() {
        compact
    } else {
        compact
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A Visa, Mastercard or Amex number that passes Luhn (or fails it by one digit).
fn card(random: &mut fastrand::Rng, valid: bool) -> String {
    let (prefix, length) = match random.u8(0..3) {
        0 => ("4".to_owned(), 16),
        1 => (format!("5{}", random.u8(1..6)), 16),
        _ => (format!("3{}", if random.bool() { 4 } else { 7 }), 15),
    };
    let mut number: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
    while number.len() < length - 1 {
        number.push(random.u32(0..10));
    }
    let sum: u32 = number
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2, d * 2) {
            // Every second digit from the right of the check digit is doubled, digits summed.
            (0, doubled) if doubled > 9 => doubled - 9,
            (0, doubled) => doubled,
            _ => d,
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    number.push(if valid {
        check
    } else {
        (check + 1 + random.u32(0..9)) % 10
    });
    let plain: String = number
        .iter()
        .map(|d| char::from_digit(*d, 10).expect("digit"))
        .collect();
    match random.u8(0..3) {
        0 => plain,
        separator => plain
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join(if separator == 1 { " " } else { "-" }),
    }
}

/// A US SSN in the issued ranges (or in area 000, 666 or 900–999, never issued).
fn ssn(random: &mut fastrand::Rng, valid: bool) -> String {
    let area = if valid {
        let mut area = random.u16(1..900);
        if area == 666 {
            area = 667;
        }
        area
    } else {
        [0, 666, random.u16(900..1000)][random.usize(..3)]
    };
    format!(
        "{area:03}-{:02}-{:04}",
        random.u8(1..100),
        random.u16(1..10_000)
    )
}

fn ip_address(random: &mut fastrand::Rng) -> String {
    let group = |random: &mut fastrand::Rng| format!("{:x}", random.u16(1..));
    match random.u8(0..5) {
        0 => (0..8).map(|_| group(random)).collect::<Vec<_>>().join(":"),
        1 => format!("2001:db8::{}", group(random)),
        _ => format!(
            "{}.{}.{}.{}",
            random.u8(1..224),
            random.u8(..),
            random.u8(..),
            random.u8(1..255)
        ),
    }
}

fn secret(random: &mut fastrand::Rng) -> String {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let token = |random: &mut fastrand::Rng, n: usize, upper: bool| -> String {
        (0..n)
            .map(|_| {
                let c = char::from(ALPHANUMERIC[random.usize(..ALPHANUMERIC.len())]);
                if upper { c.to_ascii_uppercase() } else { c }
            })
            .collect()
    };
    match random.u8(0..4) {
        0 => format!("AKIA{}", token(random, 16, true)),
        1 => format!("ghp_{}", token(random, 36, false)),
        2 => format!("sk-proj-{}", token(random, 40, false)),
        _ => "-----BEGIN RSA PRIVATE KEY-----".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanner_meets_its_precision_and_recall_goals() {
        let score = score(&generate(3_000, 42));
        assert!(score.precision() >= 0.98, "{score}");
        assert!(score.recall() >= 0.95, "{score}");
        assert_eq!(score.by_kind.len(), 7, "{score}");
    }

    #[test]
    fn generated_values_pass_or_fail_their_checks_as_intended() {
        let mut random = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let valid = card(&mut random, true);
            assert_eq!(
                scan(&valid).first().map(|f| f.kind),
                Some(PiiKind::PaymentCard),
                "{valid}"
            );
            let invalid = card(&mut random, false);
            assert!(
                scan(&invalid)
                    .iter()
                    .all(|f| f.kind != PiiKind::PaymentCard),
                "{invalid}"
            );
            let valid = iban(&mut random, true);
            assert_eq!(
                scan(&valid).first().map(|f| f.kind),
                Some(PiiKind::Iban),
                "{valid}"
            );
            let invalid = iban(&mut random, false);
            assert!(
                scan(&invalid).iter().all(|f| f.kind != PiiKind::Iban),
                "{invalid}"
            );
        }
    }

    #[test]
    fn a_scanner_that_flags_nothing_scores_zero_recall() {
        let cases = vec![Case {
            text: "nothing here".into(),
            expected: vec![(PiiKind::Email, 0..4)],
        }];
        assert_eq!(score(&cases).recall(), 0.0);
    }
}
