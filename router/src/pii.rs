//! Finding private data in text: e-mail addresses, phone numbers, IBANs, payment cards, US social
//! security numbers, IP addresses and secrets (API keys, private keys, tokens).
//!
//! Precision matters as much as recall: a request wrongly flagged is kept away from the better
//! model for nothing. So candidates found by pattern are confirmed by the rules of their format
//! where there are some (IBAN mod-97, card Luhn and issuer prefix, SSN number ranges, IP address
//! parsing). A finding holds the kind and the byte span only; its `Debug` never shows the text.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    Iban,
    PaymentCard,
    UsSsn,
    IpAddress,
    Secret,
}

impl PiiKind {
    /// A bounded label for metrics and policy rules.
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Iban => "iban",
            PiiKind::PaymentCard => "payment_card",
            PiiKind::UsSsn => "us_ssn",
            PiiKind::IpAddress => "ip_address",
            PiiKind::Secret => "secret",
        }
    }

    /// What redaction puts in place of a finding.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Iban => "[IBAN]",
            PiiKind::PaymentCard => "[CARD]",
            PiiKind::UsSsn => "[SSN]",
            PiiKind::IpAddress => "[IP]",
            PiiKind::Secret => "[SECRET]",
        }
    }
}

/// One piece of private data: its kind and where it is (byte offsets into the scanned text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiKind,
    pub span: Range<usize>,
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the patterns of this module are valid")
}

static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        r"|\bAKIA[0-9A-Z]{16}\b",           // AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b", // GitHub tokens
        r"|\bgithub_pat_[A-Za-z0-9_]{40,}\b",
        r"|\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}", // OpenAI and Anthropic keys
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",        // Slack tokens
        r"|\bAIza[0-9A-Za-z_-]{35}\b",              // Google API keys
        r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", // JWTs
    ))
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
});
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"));
static CARD: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d(?:[ -]?\d){12,18}\b"));
static SSN: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(\d{3})[- ](\d{2})[- ](\d{4})\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| regex(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"));
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\b[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\b"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}\b")
});

/// A kind, the pattern of its candidates, and the rule that confirms a candidate.
type Check = (PiiKind, &'static LazyLock<Regex>, fn(&str) -> bool);

/// Every finding in `text`, in order of position, none overlapping another.
pub fn scan(text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    // The most specific formats first: a card number must not also count as a phone number.
    let checks: [Check; 8] = [
        (PiiKind::Secret, &SECRET, |_| true),
        (PiiKind::Email, &EMAIL, |_| true),
        (PiiKind::Iban, &IBAN, is_iban),
        (PiiKind::PaymentCard, &CARD, is_payment_card),
        (PiiKind::UsSsn, &SSN, is_ssn),
        (PiiKind::IpAddress, &IPV4, |s| s.parse::<Ipv4Addr>().is_ok()),
        (PiiKind::IpAddress, &IPV6, is_ipv6),
        (PiiKind::Phone, &PHONE, is_phone),
    ];
    // Spans of account and card numbers that failed their checks: not private data, but not a
    // phone number either (an IBAN with a wrong check digit ends in a phone-like digit run).
    let mut claimed: Vec<Range<usize>> = Vec::new();
    for (kind, pattern, confirm) in checks {
        for found in pattern.find_iter(text) {
            let span = found.range();
            let overlaps = |s: &Range<usize>| s.start < span.end && span.start < s.end;
            if findings.iter().any(|f: &Finding| overlaps(&f.span)) || claimed.iter().any(overlaps)
            {
                continue;
            }
            if confirm(found.as_str()) {
                findings.push(Finding { kind, span });
            } else if matches!(kind, PiiKind::Iban | PiiKind::PaymentCard) {
                claimed.push(span);
            }
        }
    }
    findings.sort_by_key(|f| f.span.start);
    findings
}

/// `text` with every finding replaced by its kind's placeholder.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for finding in findings {
        out.push_str(&text[at..finding.span.start]);
        out.push_str(finding.kind.placeholder());
        at = finding.span.end;
    }
    out.push_str(&text[at..]);
    out
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 must be 1.
fn is_iban(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        remainder = if value < 10 {
            (remainder * 10 + value) % 97
        } else {
            (remainder * 100 + value) % 97
        };
    }
    remainder == 1
}

/// Luhn's checksum, on a number whose issuer prefix and length belong to a card network.
fn is_payment_card(candidate: &str) -> bool {
    let digits = digits(candidate);
    let n = digits.len();
    let prefix = |k: usize| digits[..k].iter().fold(0u32, |acc, d| acc * 10 + d);
    let network = match digits[0] {
        4 => matches!(n, 13 | 16 | 19),                     // Visa
        5 => (51..=55).contains(&prefix(2)) && n == 16,     // Mastercard
        2 => (2221..=2720).contains(&prefix(4)) && n == 16, // Mastercard
        3 => {
            matches!(prefix(2), 34 | 37) && n == 15                         // Amex
            || (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n)
        } // JCB
        6 => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                && (16..=19).contains(&n)
        } // Discover
        _ => false,
    };
    network && luhn(&digits)
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The number ranges the Social Security Administration never assigns are not SSNs.
fn is_ssn(candidate: &str) -> bool {
    let Some(parts) = SSN.captures(candidate) else {
        return false;
    };
    let number = |i: usize| parts[i].parse::<u32>().unwrap_or(0);
    let (area, group, serial) = (number(1), number(2), number(3));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// At least three groups with digits: `std::vec` or `add::beef` in code are not addresses.
fn is_ipv6(candidate: &str) -> bool {
    let groups = candidate.split(':').filter(|g| !g.is_empty()).count();
    groups >= 3 && candidate.parse::<Ipv6Addr>().is_ok()
}

/// Phone numbers: 10 or 11 digits written with separators (national formats), or up to 15
/// after a `+` (international); not something that reads as a date or a plain long number.
fn is_phone(candidate: &str) -> bool {
    let count = digits(candidate).len();
    if candidate.starts_with('+') {
        return (8..=15).contains(&count);
    }
    let formatted =
        candidate.contains('(') || candidate.chars().any(|c| matches!(c, ' ' | '-' | '.'));
    (10..=11).contains(&count) && formatted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiKind, &str)> {
        scan(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.span]))
            .collect()
    }

    #[test]
    fn each_kind_is_found_with_its_span() {
        let text = "Mail jane.doe@example.co.uk or call +44 20 7946 0958. \
            IBAN GB82 WEST 1234 5698 7654 32, card 4111 1111 1111 1111, SSN 123-45-6789, \
            host 192.168.10.5 and fe80::1ff:fe23:4567:890a, key AKIAIOSFODNN7EXAMPLE.";
        assert_eq!(
            kinds(text),
            [
                (PiiKind::Email, "jane.doe@example.co.uk"),
                (PiiKind::Phone, "+44 20 7946 0958"),
                (PiiKind::Iban, "GB82 WEST 1234 5698 7654 32"),
                (PiiKind::PaymentCard, "4111 1111 1111 1111"),
                (PiiKind::UsSsn, "123-45-6789"),
                (PiiKind::IpAddress, "192.168.10.5"),
                (PiiKind::IpAddress, "fe80::1ff:fe23:4567:890a"),
                (PiiKind::Secret, "AKIAIOSFODNN7EXAMPLE"),
            ]
        );
    }

    #[test]
    fn look_alikes_that_fail_their_checks_are_not_findings() {
        for text in [
            "card 4111 1111 1111 1112",                  // Luhn fails
            "order 1234 5678 9012 3456",                 // no card network starts with 1
            "IBAN GB82 WEST 1234 5698 7654 33",          // mod-97 fails
            "ticket 000-12-3456 and 666-12-3456",        // never-assigned SSN areas
            "version 1.2.3.4000 of the 300.1.1.1 build", // not IP addresses
            "see RFC 2616, section 14.9, in 2026",       // short numbers
            "the meeting is on 2026-11-26",              // a date
            "ratio 3:4:5 and time 10:30:00",             // not IPv6
            "use std::vec::Vec; add::beef()",            // Rust paths, not IPv6
        ] {
            assert_eq!(kinds(text), [], "{text}");
        }
    }

    #[test]
    fn secrets_of_several_providers_are_found() {
        let cases = [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "xoxb-123456789012-abcdefghij",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ];
        for secret in cases {
            let text = format!("here: {secret} ok");
            assert_eq!(kinds(&text), [(PiiKind::Secret, secret)], "{secret}");
        }
    }

    #[test]
    fn phone_formats_are_found() {
        for phone in [
            "(415) 555-2671",
            "415-555-2671",
            "+1 415 555 2671",
            "+33 1 42 68 53 00",
        ] {
            let text = format!("call {phone} today");
            assert_eq!(kinds(&text), [(PiiKind::Phone, phone)], "{phone}");
        }
    }

    #[test]
    fn redaction_replaces_each_finding() {
        let text = "Write to bob@corp.example, card 5555 5555 5555 4444.";
        assert_eq!(redact(text, &scan(text)), "Write to [EMAIL], card [CARD].");
    }

    #[test]
    fn findings_do_not_show_the_text_in_debug() {
        let findings = scan("ssn 123-45-6789");
        assert!(!format!("{findings:?}").contains("6789"));
    }
}
