//! Phone numbers: international (`+49 30 1234567`, `0049…`), national with separators
//! (`(415) 555-2671`, `06 12 34 56 78`, `0151 23456789`), and short local ones (`555-0187`).
//! Look-alikes (timestamps, versions, amounts, labelled references) are claimed before this runs;
//! what is left must also stand alone (not inside a longer token) and, for the shapes that other
//! numbers share, follow a word that says it is a phone number.

use super::formats::digits;
use super::{Pattern, PiiKind, Scan, regex};

static PHONE: Pattern = Pattern::new(|| {
    regex(concat!(
        r"(?:\+|\b00)\d{1,3}[ .-]?(?:\(0?\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{1,5}){0,5}\b",
        r"|(?:\(\d{1,5}\)[ .-]?|\b)\d{2,5}(?:[ .-]?\d{2,5}){1,5}\b",
    ))
});
/// Words that say a phone number follows.
static CUE: Pattern = Pattern::new(|| {
    regex(concat!(
        r"(?i)(?:\b(?:tel|tél|phone|telephone|téléphone|teléfono|telefono|telefon|mobile|mob|cell|",
        r"call|ring|text|sms|whatsapp|fax|reach|reachable|contact|number|handy|",
        r"rufnummer|nummer|erreichbar|anrufen|portable|numéro|appeler|móvil|movil|celular|",
        r"llamar|llámame|número)\b\.?|☎|📞)[^\n\d]{0,20}$",
    ))
});

pub(super) fn find(scan: &mut Scan) {
    for found in PHONE.find_iter(scan.text) {
        let span = found.range();
        if !scan.is_free(&span) || !stands_alone(scan, &span) {
            continue;
        }
        let cued = CUE.is_match(scan.before(span.start, 40));
        if is_phone(found.as_str(), cued) {
            scan.add(PiiKind::Phone, span);
        }
    }
}

/// Not part of a longer token: a phone number is not glued to letters, dots or slashes.
fn stands_alone(scan: &Scan, span: &std::ops::Range<usize>) -> bool {
    let before = scan.before(span.start, 4).chars().next_back();
    let mut after = scan.after(span.end, 4).chars();
    let (next, then) = (after.next(), after.next());
    let glued_before = before.is_some_and(|c| c.is_alphanumeric() || "./:_#-".contains(c));
    let glued_after = next.is_some_and(|c| c.is_alphanumeric() || "/%€$£".contains(c))
        || (next.is_some_and(|c| ".:-,".contains(c)) && then.is_some_and(|c| c.is_ascii_digit()));
    !glued_before && !glued_after
}

/// By the count of digits and how they are written: international numbers after `+` or `00`;
/// national ones of 10 or 11 digits with separators (9 or 12 with a leading trunk 0); 7-digit
/// local numbers written `555-0187`; other shapes only after a word like "phone" or "call".
fn is_phone(candidate: &str, cued: bool) -> bool {
    let count = digits(candidate).len();
    let amount = candidate
        .rsplit_once(['.', ','])
        .is_some_and(|(whole, cents)| cents.len() <= 2 && !whole.contains(['.', ',', ' ', '-']));
    // An SSN's shape (`666-12-3456`) that failed its checks is not a phone number either.
    let ssn_shaped = candidate.len() == 11 && candidate.split('-').map(str::len).eq([3, 2, 4]);
    if amount || ssn_shaped {
        return false;
    }
    if candidate.starts_with('+') || candidate.starts_with("00") {
        return (8..=15).contains(&count);
    }
    let separated = candidate.contains('(') || candidate.contains([' ', '-', '.', '/']);
    let local =
        count == 7 && candidate.len() == 8 && matches!(candidate.as_bytes()[3], b'-' | b'.');
    let trunk = candidate.starts_with('0') && (9..=12).contains(&count);
    // A national number with its trunk 0 written without separators: `0839214470`.
    let plain_national = candidate.starts_with('0')
        && !candidate.starts_with("00")
        && (10..=11).contains(&count)
        && count == candidate.len();
    // Spanish and other 9-digit plans, written in three or more groups (`976 48 12 07`).
    let grouped_nine = count == 9 && candidate.split([' ', '.', '-']).count() >= 3;
    plain_national
        || (separated && ((10..=11).contains(&count) || trunk || local || grouped_nine))
        || (cued && (7..=15).contains(&count))
}
