//! Finding private data in text, without a network and in a few hundred microseconds.
//!
//! Two families of detectors:
//! - **formats** with rules of their own ([`formats`]): e-mail addresses, IBANs (mod-97), payment
//!   cards (Luhn and issuer prefix), US social security numbers (number ranges), IP addresses,
//!   secrets (API keys, private keys, tokens), and [`phones`];
//! - **data about a person**, read from their context: names ([`names`]), employee and customer
//!   numbers, passports and national IDs, dates of birth ([`documents`]), postal addresses
//!   ([`addresses`]), and disclosures of health, religion, union membership and the other special
//!   categories of GDPR article 9 ([`special`]).
//!
//! Precision matters as much as recall: a request wrongly flagged is kept away from the better
//! model for nothing. So candidates are confirmed by the rules of their format where there are
//! some, and numbers that merely look like private data — timestamps, dates, versions, prices,
//! order and ticket numbers — are claimed first ([`lookalikes`]) so that no later detector reads
//! them as a phone number or an ID. A finding holds the kind and the byte span only; its `Debug`
//! never shows the text.

mod addresses;
mod documents;
mod formats;
mod lookalikes;
mod names;
mod phones;
mod special;

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
    /// The name of an identified private individual.
    Person,
    /// A person's number in some system: employee, badge, customer, member, patient.
    PersonalId,
    /// Passports, national ID cards, driving licences, tax and social insurance numbers.
    NationalId,
    /// A person's postal address.
    Address,
    DateOfBirth,
    /// Health, disability, religion, union membership, sexual orientation, criminal record…
    /// disclosed about an identifiable person (GDPR art. 9 and 10).
    SpecialCategory,
}

impl PiiKind {
    pub const ALL: [PiiKind; 13] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Iban,
        PiiKind::PaymentCard,
        PiiKind::UsSsn,
        PiiKind::IpAddress,
        PiiKind::Secret,
        PiiKind::Person,
        PiiKind::PersonalId,
        PiiKind::NationalId,
        PiiKind::Address,
        PiiKind::DateOfBirth,
        PiiKind::SpecialCategory,
    ];

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
            PiiKind::Person => "person",
            PiiKind::PersonalId => "personal_id",
            PiiKind::NationalId => "national_id",
            PiiKind::Address => "address",
            PiiKind::DateOfBirth => "date_of_birth",
            PiiKind::SpecialCategory => "special_category",
        }
    }

    pub fn parse(name: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// What redaction puts in place of a finding: its kind in capitals and brackets.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Iban => "[IBAN]",
            PiiKind::PaymentCard => "[PAYMENT_CARD]",
            PiiKind::UsSsn => "[US_SSN]",
            PiiKind::IpAddress => "[IP_ADDRESS]",
            PiiKind::Secret => "[SECRET]",
            PiiKind::Person => "[PERSON]",
            PiiKind::PersonalId => "[PERSONAL_ID]",
            PiiKind::NationalId => "[NATIONAL_ID]",
            PiiKind::Address => "[ADDRESS]",
            PiiKind::DateOfBirth => "[DATE_OF_BIRTH]",
            PiiKind::SpecialCategory => "[SPECIAL_CATEGORY]",
        }
    }
}

/// One piece of private data: its kind and where it is (byte offsets into the scanned text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: PiiKind,
    pub span: Range<usize>,
}

/// Every finding in `text`, in order of position, none overlapping another.
pub fn scan(text: &str) -> Vec<Finding> {
    let mut scan = Scan::new(text);
    // The most specific formats first: a card number must not also count as a phone number.
    formats::find(&mut scan);
    documents::find(&mut scan);
    addresses::find(&mut scan);
    lookalikes::claim(&mut scan);
    phones::find(&mut scan);
    special::find(&mut scan);
    names::find(&mut scan);
    let mut findings = scan.findings;
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

/// A scan in progress: the findings so far, and the spans that no later detector may take
/// (look-alikes, and candidates that failed their format's check).
struct Scan<'t> {
    text: &'t str,
    findings: Vec<Finding>,
    claimed: Vec<Range<usize>>,
}

impl<'t> Scan<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            text,
            findings: Vec::new(),
            claimed: Vec::new(),
        }
    }

    /// Whether `span` overlaps nothing found or claimed so far.
    fn is_free(&self, span: &Range<usize>) -> bool {
        let overlaps = |s: &Range<usize>| s.start < span.end && span.start < s.end;
        !self.findings.iter().any(|f| overlaps(&f.span)) && !self.claimed.iter().any(overlaps)
    }

    /// Keeps a finding unless it overlaps an earlier one; says whether it was kept.
    fn add(&mut self, kind: PiiKind, span: Range<usize>) -> bool {
        let span = trim(self.text, span);
        if span.is_empty() || !self.is_free(&span) {
            return false;
        }
        self.findings.push(Finding { kind, span });
        true
    }

    /// Marks a span as not private data of any later kind.
    fn claim(&mut self, span: Range<usize>) {
        self.claimed.push(span);
    }

    /// Up to `bytes` of text before `at` (cut at a character boundary).
    fn before(&self, at: usize, bytes: usize) -> &'t str {
        let mut start = at.saturating_sub(bytes);
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        &self.text[start..at]
    }

    /// Up to `bytes` of text after `at` (cut at a character boundary).
    fn after(&self, at: usize, bytes: usize) -> &'t str {
        let mut end = (at + bytes).min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        &self.text[at..end]
    }

    fn has_finding_near(&self, span: &Range<usize>, distance: usize, kinds: &[PiiKind]) -> bool {
        self.findings.iter().any(|f| {
            kinds.contains(&f.kind)
                && f.span.start < span.end + distance
                && span.start < f.span.end + distance
        })
    }
}

/// `span` without the whitespace and trailing punctuation at its ends.
fn trim(text: &str, span: Range<usize>) -> Range<usize> {
    let part = &text[span.clone()];
    let start = span.start + (part.len() - part.trim_start().len());
    let trimmed = part
        .trim_start()
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '.'));
    start..start + trimmed.len()
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the patterns of this module are valid")
}

/// A pattern compiled on first use.
type Pattern = LazyLock<Regex>;

#[cfg(test)]
mod tests;
