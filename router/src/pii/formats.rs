//! Private data with a format of its own, confirmed by its rules where it has some: secrets,
//! e-mail addresses, IBANs, payment cards, US social security numbers and IP addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Pattern, PiiKind, Scan, regex};

static SECRET: Pattern = Pattern::new(|| {
    regex(concat!(
        // A private key with its body, up to its end line (or the end of the text).
        r"(?s:-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        r".{0,4000}?(?:-----END [A-Z ]*-----|\z))",
        r"|\bAKIA[0-9A-Z]{16}\b",           // AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b", // GitHub tokens
        r"|\bgithub_pat_[A-Za-z0-9_]{40,}\b",
        r"|\bglpat-[A-Za-z0-9_-]{20,}", // GitLab tokens
        r"|(?i:accountkey|sharedaccesskey)=[A-Za-z0-9+/]{20,}={0,2}", // Azure keys
        r"|\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}", // OpenAI and Anthropic keys
        r"|\bsk_(?:live|test)_[A-Za-z0-9]{16,}", // Stripe keys
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}", // Slack tokens
        r"|\bAIza[0-9A-Za-z_-]{35}\b",  // Google API keys
        r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", // JWTs
        r"|\b[a-z]{2,10}_(?:live|prod|test)_[A-Za-z0-9]{16,}\b", // vendors' live and test keys
        r"|[?&]sig=[A-Za-z0-9%+/=]{20,}", // signed URLs (Azure SAS)
        r"|hooks\.slack\.com/services/[A-Z0-9]+/[A-Z0-9]+/[A-Za-z0-9]{16,}", // Slack webhooks
    ))
});
/// A password written out after its label: `password: Hunter2!`, `pwd=…`, `Passwort ist …`.
static PASSWORD: Pattern = Pattern::new(|| {
    regex(concat!(
        r#"(?i)(?:(?:passw(?:or)?d|pwd|passwort|kennwort|mot de passe|contraseña|mdp)["']?\s*(?:is|was|ist|war|est|es|era|=|:)?"#,
        r#"|(?:secret|community|token|api[_-]?key|\w+_pw|\w+_pass)["']?\s*(?:=|:))\s*["'`]?([^\s"'`,;]{6,64})"#,
    ))
});
/// A service's token: a short lowercase prefix and a long random tail (`zd_8Kq2vLx9Tn4RpW7cYb3m`).
static PREFIXED_TOKEN: Pattern = Pattern::new(|| regex(r"\b[a-z]{2,6}_[A-Za-z0-9]{20,64}\b"));
static EMAIL: Pattern = Pattern::new(|| {
    regex(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
});
static IBAN: Pattern =
    Pattern::new(|| regex(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"));
static CARD: Pattern = Pattern::new(|| regex(r"\b\d(?:[ -]?\d){12,18}\b"));
static SSN: Pattern = Pattern::new(|| regex(r"\b(\d{3})[- ](\d{2})[- ](\d{4})\b"));
static IPV4: Pattern = Pattern::new(|| regex(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b"));
static IPV6: Pattern = Pattern::new(|| regex(r"(?i)\b[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}\b"));

/// A kind, the pattern of its candidates, and the rule that confirms a candidate.
type Check = (PiiKind, &'static Pattern, fn(&str) -> bool);

pub(super) fn find(scan: &mut Scan) {
    // Before e-mail addresses: `postgresql://app:S3cr#t@db.local` is a password, then a host.
    for found in CREDENTIAL_IN_CODE.captures_iter(scan.text) {
        let value = (1..=3)
            .find_map(|group| found.get(group))
            .expect("one of the groups matched");
        let token = value.as_str();
        if is_password(token) && mixes_letters_and_digits(token) {
            scan.add(PiiKind::Secret, value.range());
        }
    }
    let checks: [Check; 8] = [
        (PiiKind::Secret, &SECRET, |_| true),
        (PiiKind::Secret, &PREFIXED_TOKEN, is_random_token),
        (PiiKind::Email, &EMAIL, |_| true),
        (PiiKind::Iban, &IBAN, is_iban),
        (PiiKind::PaymentCard, &CARD, is_payment_card),
        (PiiKind::UsSsn, &SSN, is_ssn),
        (PiiKind::IpAddress, &IPV4, |s| {
            s.parse::<Ipv4Addr>().is_ok_and(|ip| !ip.is_unspecified())
        }),
        (PiiKind::IpAddress, &IPV6, is_ipv6),
    ];
    for (kind, pattern, confirm) in checks {
        for found in pattern.find_iter(scan.text) {
            let span = found.range();
            if !scan.is_free(&span)
                || kind == PiiKind::IpAddress && after_a_version_label(scan, &span)
            {
                continue;
            }
            if confirm(found.as_str()) {
                scan.add(kind, span);
            } else if kind == PiiKind::Iban
                || kind == PiiKind::PaymentCard && grouped_by_four(found.as_str())
            {
                // Not private data, but not a phone number either: an IBAN with a wrong check
                // digit ends in a phone-like digit run.
                scan.claim(span);
            }
        }
    }
    for found in ASSIGNED_KEY.captures_iter(scan.text) {
        let value = found.get(1).expect("the pattern has a group");
        let v = value.as_str();
        let random = mixes_letters_and_digits(v)
            && !v.contains("YOUR")
            && !v.to_ascii_lowercase().contains("example")
            && !is_path(v);
        if random {
            scan.add(PiiKind::Secret, value.range());
        }
    }
    for label in PASSWORD_NEAR.find_iter(scan.text) {
        // The first strong password-like word on the label's line, within 100 bytes of it.
        let window = scan.after(label.end(), 100);
        let line = window.split('\n').next().unwrap_or("");
        let mut at = label.end();
        for word in line.split_inclusive(WORD_BREAKS) {
            let start = at;
            at += word.len();
            let word = word.trim_end_matches(WORD_BREAKS);
            let trimmed = word.trim_end_matches(['.', '!', '?', ':']);
            let strong = trimmed.len() >= 8
                && trimmed.chars().any(|c| c.is_ascii_digit())
                && trimmed.chars().any(|c| c.is_ascii_uppercase())
                && trimmed.chars().any(|c| c.is_ascii_lowercase())
                && !trimmed.contains('.');
            if strong && is_password(trimmed) {
                scan.add(PiiKind::Secret, start..start + trimmed.len());
                break;
            }
        }
    }
    for found in PASSWORD.captures_iter(scan.text) {
        let value = found.get(1).expect("the pattern has a group");
        let trimmed = value
            .as_str()
            .trim_end_matches(['.', ',', '!', '?', ')', ':', ';']);
        if trimmed.len() >= 6 && is_password(trimmed) {
            scan.add(
                PiiKind::Secret,
                value.start()..value.start() + trimmed.len(),
            );
        }
    }
}

/// What ends a word that might be a password written in prose.
const WORD_BREAKS: [char; 9] = [' ', '\t', '(', ')', '"', '\'', '`', ',', ';'];

fn mixes_letters_and_digits(value: &str) -> bool {
    value.chars().any(|c| c.is_ascii_digit()) && value.chars().any(|c| c.is_ascii_alphabetic())
}

/// An object's path (`2026/03/run_0412`, an S3 `Key=`), not a key: a slash before a word.
fn is_path(value: &str) -> bool {
    value.split('/').skip(1).any(|segment| {
        segment
            .chars()
            .take(3)
            .filter(char::is_ascii_lowercase)
            .count()
            == 3
    })
}

/// Mixed case with digits throughout, as generated tokens are and identifiers are not.
fn is_random_token(candidate: &str) -> bool {
    let tail = candidate.split_once('_').map_or(candidate, |(_, t)| t);
    tail.chars().filter(char::is_ascii_digit).count() >= 2
        && tail.chars().any(|c| c.is_ascii_uppercase())
        && tail.chars().any(|c| c.is_ascii_lowercase())
}

/// Written in groups of four or more digits, as card numbers are (phone numbers have shorter
/// groups).
fn grouped_by_four(candidate: &str) -> bool {
    candidate.split([' ', '-']).all(|group| group.len() >= 4)
}

/// A long random-looking value assigned to a variable named like a key:
/// `aws_secret_access_key = wJ8r…`, `OPENWEATHER_KEY = 'a4f7…'`.
static ASSIGNED_KEY: Pattern = Pattern::new(|| {
    regex(r#"(?i)\b\w*(?:key|secret|token)\w*["']?\s*[:=]\s*["']?([A-Za-z0-9+/_-]{16,}={0,2})"#)
});
/// Credentials in code: the password of a URL (`postgresql://app:S3cret!@db`), a bearer token,
/// and the last string given to a login or connect call (`server.login('bot@x', 'Tr0ut!Lake77')`).
static CREDENTIAL_IN_CODE: Pattern = Pattern::new(|| {
    regex(concat!(
        r#"\b[a-z][a-z0-9+.-]*://[^\s:/@'"]+:([^\s@/'"]{6,64})@"#,
        r#"|\bBearer\s+([A-Za-z0-9._~+/-]{16,}=*)"#,
        r#"|(?i:\b(?:login|connect|pdo|authenticate|auth|bind|credentials?)\s*\([^()\n]{0,120}?,\s*)["']([^"'\s]{6,64})["']\s*\)"#,
    ))
});
/// The label of a password written near it: `my password (Sandyford#2026 lol)`.
static PASSWORD_NEAR: Pattern = Pattern::new(|| {
    regex(
        r"(?i)\b(?:password|passwort|pw|pwd|pass|contraseña|mot de passe|kennwort|login|credentials|creds)\b",
    )
});

/// A written-out password mixes kinds of characters; a placeholder, a plain word or code
/// (`token.clone()`, `os.environ[`) does not.
fn is_password(value: &str) -> bool {
    let code = value.contains(['(', ')', '[', ']', '{', '}', '<', '>'])
        || value.starts_with(['_', '.', '&', '$', '%'])
        || value.contains("environ")
        || value.contains("process.env");
    if code {
        return false;
    }
    let kinds = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
        value.chars().any(|c| !c.is_alphanumeric()),
    ];
    let placeholder = value.contains("***") || value.to_ascii_uppercase() == value;
    let letters_and_more = (kinds[0] || kinds[1]) && (kinds[2] || kinds[3]);
    kinds.iter().filter(|k| **k).count() >= 2 && letters_and_more && !placeholder
}

/// `firmware 8.10.130.0`, `version 4.32.0.0`: a version written like an IPv4 address.
fn after_a_version_label(scan: &Scan, span: &std::ops::Range<usize>) -> bool {
    static LABEL: Pattern = Pattern::new(|| {
        regex(
            r"(?i)\b(?:firmware|version|build|release|driver|v)\s*(?:is|:|=|now|to)?\s*\(?(?:now\s*)?$",
        )
    });
    LABEL.is_match(scan.before(span.start, 32))
}

pub(super) fn digits(s: &str) -> Vec<u32> {
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
