//! Numbers that look like private data and are not: timestamps, dates, times, version numbers,
//! prices and amounts, hexadecimal codes, and numbers under a label that says what they are
//! (order, ticket, invoice, line, port…). Claimed before phone numbers and names are looked for,
//! so that a pasted log's `2026-11-03 14:22:07` is never a phone number.

use super::{Pattern, Scan, regex};

static LOOKALIKES: Pattern = Pattern::new(|| {
    regex(concat!(
        // ISO dates and timestamps, with fractions and zones.
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
        // Day, month and year (or month, day, year).
        r"|\b\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})\b",
        // Times of day and durations.
        r"|\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b",
        // Versions and dotted build numbers.
        r"|\b[vV]?\d+(?:\.\d+){2,}\b",
        // Amounts with a currency or a unit.
        r"|[$€£¥]\s?\d[\d,.' ]*\d",
        r"|\b\d[\d,.' ]*\d\s?(?:€|EUR|USD|GBP|CHF|MXN|\$|k€|%|ms|MB|GB|KB|TB|kg|km|mm|cm|h|min|s)\b",
        // Hexadecimal codes and addresses.
        r"|\b0x[0-9A-Fa-f]+\b",
        // Numbers under a label that says what they are.
        r"|(?i:\b(?:order|invoice|inv|ticket|incident|case|ref(?:erence)?|po|purchase order",
        r"|sku|part|item|article|art|serial|s/n|batch|lot|tracking|shipment|line|port|pid|",
        r"build|version|release|error|code|req|request|chg|change|quote|contract|project|room|",
        r"bestellung|rechnung|auftrag|commande|facture|pedido|factura|albarán)",
        r"(?:\s?(?:no\.?|nr\.?|n°|nº|number|num|#|id))?\s?[:#]?\s?[A-Z]{0,5}[-/]?\d[\d/-]*)",
    ))
});

/// `06.71.28.45.93`, `512.555.0199`: a phone number written with dots, not a version (whose
/// groups are short: `10.0.19045.3693`, `2.14.3`).
fn is_dotted_phone(candidate: &str) -> bool {
    let groups: Vec<&str> = candidate.split('.').collect();
    let digits: usize = groups.iter().map(|g| g.len()).sum();
    groups
        .iter()
        .all(|g| g.len() >= 2 && g.bytes().all(|b| b.is_ascii_digit()))
        && digits >= 9
}

/// `06.71.28`: three numbers that cannot be a day, a month and a year.
fn is_impossible_date(candidate: &str) -> bool {
    let parts: Vec<u32> = candidate
        .split(['.', '/', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    let [a, b, _] = parts[..] else {
        return false;
    };
    let short = candidate.len() <= 10 && !candidate.contains(':');
    short
        && candidate
            .split(['.', '/', '-'])
            .next()
            .is_some_and(|p| p.len() <= 2)
        && !((1..=31).contains(&a) && (1..=12).contains(&b)
            || (1..=12).contains(&a) && (1..=31).contains(&b))
}

pub(super) fn claim(scan: &mut Scan) {
    for found in LOOKALIKES.find_iter(scan.text) {
        let span = found.range();
        if scan.is_free(&span)
            && !is_dotted_phone(found.as_str())
            && !is_impossible_date(found.as_str())
        {
            scan.claim(span);
        }
    }
}
