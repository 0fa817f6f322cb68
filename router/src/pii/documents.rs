//! Numbers that identify a person: employee, badge, customer and patient numbers after the words
//! that name them; passports, national ID cards, driving licences, tax and social insurance
//! numbers (after their names, or alone where the format has a check: UK National Insurance,
//! Spanish DNI and NIE, French NIR, Italian codice fiscale); and dates of birth.

use super::{Pattern, PiiKind, Scan, regex};

/// What may sit between a label and its value: `no.`, `number`, `#`, `is`, `:`…
const FILLER: &str = r"(?:[\s-]*(?:id|no\.?|nr\.?|n°|nº|number|num|#|code))?(?:\s*(?:is|was|ist|est|es|:|=|#))?\s*\(?";
/// An identifier: letters and digits in up to five groups, with at least one digit per group.
const VALUE: &str =
    r"([A-Z]{0,4}[ /-]?\d[A-Z0-9]*(?:[ /-][A-Z]{0,3}\d[A-Z0-9]*){0,4}(?:[ -][A-Z])?)\b";

static PERSONAL_ID: Pattern = Pattern::new(|| {
    regex(&format!(
        r"(?i)\b(?:{})\b\.?{FILLER}{VALUE}",
        concat!(
            r"employee|staff|personnel|emp|badge|customer|cust|client|member(?:ship)?|patient|",
            r"student|payroll|worker|contractor|user ?id|account holder|traveller id|traveler id|",
            r"nmls id|cust_no|cust_id|emp_no|emp no|n° étudiant|numéro étudiant|student number|",
            r"matricola|loyalty (?:no|number|id)|supplier|vendor|agent|subject|sub_id|member no|",
            r"policy ?holder|nhs|mrn|gmc|nmc|chart|library card|",
            r"hospital (?:number|no)|medical record|personal (?:number|no|id)|personalnummer|personal-?nr|",
            r"pers\.? ?(?:no|nr|number)|",
            r"mitarbeiter(?:nummer|-?id|-nr\.?)?|kunden(?:nummer|-?nr\.?|-?id)?|",
            r"patienten(?:nummer|-?id)|versicherten(?:nummer|-nr\.?)|matricule|salarié|",
            r"numéro (?:d'employé|de salarié|client|d'adhérent|de patient)|n° (?:salarié|client)|",
            r"empleado|empleada|cliente|socio|paciente|legajo|número de empleada|",
            r"número de (?:empleado|cliente|socio|paciente)|nº de (?:empleado|cliente|socio)",
        ),
    ))
});
static NATIONAL_ID: Pattern = Pattern::new(|| {
    regex(&format!(
        r"(?i)\b(?:{})\b{FILLER}{VALUE}",
        concat!(
            r"passport|passeport|pasaporte|reisepass|pass(?:nummer|-nr\.?)|national id|",
            r"national identity(?: card)?|id card|identity card|personalausweis|ausweis(?:nummer)?|",
            r"carte d'identité|cni|dni|nie (?:number|no)|nif|nin|nino|ni (?:number|no)|national insurance|nir|",
            r"numéro de sécurité sociale|n° de sécu|sécu|sécurité sociale|",
            r"sozialversicherungsnummer|sv-nummer|rentenversicherungsnummer|steuer-?id|",
            r"steueridentifikationsnummer|steuernummer|tax id|tax identification|tin|tax number|",
            r"codice fiscale|driving licen[cs]e|driver'?s licen[cs]e|driver licen[cs]e|",
            r"führerschein(?:nummer)?|permis de conduire|permiso de conducir|carnet de conducir|",
            r"aadhaar|bsn|pesel|curp|nss|número de seguridad social|seguridad social|",
            r"social insurance|social security|ppsn?|pps (?:number|no)|rut|cdl|rijbewijs|",
            r"licen[cs]e (?:number|no)|matrícula consular|itin|sin (?:number|no)|nas (?:number|no)|",
            r"pan (?:number|no|card)|cpf|nric|emirates id|ahv|numéro fiscal|n° fiscal|",
            r"passport details|identification number",
        ),
    ))
});
/// A national ID's label a few words before a long number: `passport details: G31847265`,
/// `licence number (MORGA753116SM9IJ)`. The number needs six digits, so that a year or a count
/// in between (`passport expires in 2027`) is not one.
static NATIONAL_ID_NEAR: Pattern = Pattern::new(|| {
    regex(concat!(
        r"(?i)\b(?:passport|passeport|pasaporte|reisepass|national id|id card|identity card|",
        r"driving licen[cs]e|driver'?s? licen[cs]e|licen[cs]e number|steuer-?id|tax id|",
        r"social security|social insurance|national insurance|ppsn|dni|nie|nif)\b",
        r"[^\d\n.?!]{0,40}?\b([A-Z]{0,5}\d[A-Z0-9]{5,15})\b",
    ))
});
/// National ID formats distinctive enough, or checked, to stand without a label.
static UK_NINO: Pattern =
    Pattern::new(|| regex(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"));
static SPANISH_DNI: Pattern = Pattern::new(|| regex(r"\b([XYZ]?)-?(\d{7,8})-?([A-Z])\b"));
static FRENCH_NIR: Pattern = Pattern::new(|| {
    regex(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?(\d{2})\b")
});
static CODICE_FISCALE: Pattern =
    Pattern::new(|| regex(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b"));

const MONTHS: &str = concat!(
    r"jan(?:uary|\.)?|feb(?:ruary|\.)?|mar(?:ch|\.)?|apr(?:il|\.)?|may|jun(?:e|\.)?|",
    r"jul(?:y|\.)?|aug(?:ust|\.)?|sep(?:t(?:ember)?|\.)?|oct(?:ober|\.)?|nov(?:ember|\.)?|",
    r"dec(?:ember|\.)?|januar|jänner|februar|märz|mai|juni|juli|oktober|dezember|",
    r"janvier|février|mars|avril|juin|juillet|août|septembre|octobre|novembre|décembre|",
    r"enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|",
    r"noviembre|diciembre"
);
static BIRTH_DATE: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"(?i)\b(?:born(?: on| in)?|dob|d\.o\.b\.?|date of birth|date_of_birth|birth_?date|birthday|bday|turns \d{{1,3}}|",
            r"date_naissance|fecha_nacimiento|geburtsdatum|",
            r"geboren(?: am)?|geb\.|geburtsdatum|geburtstag|née? le|né\(e\) le|",
            r"date de naissance|fecha de nacimiento|nacid[oa] el|f\. ?nac\.?)",
            r"[^\d\n]{{0,50}}?",
            r"(\d{{1,2}}[./-]\d{{1,2}}[./-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|",
            r"\d{{1,2}}(?:st|nd|rd|th|\.|er)?\s+(?:de\s+)?(?:{months})(?:\s+de)?,?\s+\d{{4}}|",
            r"(?:{months})\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})",
        ),
        months = MONTHS
    ))
});

pub(super) fn find(scan: &mut Scan) {
    for (pattern, check) in [
        (&UK_NINO, (|_| true) as fn(&str) -> bool),
        (&SPANISH_DNI, |_| true),
        (&FRENCH_NIR, is_nir),
        (&CODICE_FISCALE, |_| true),
    ] {
        for found in pattern.find_iter(scan.text) {
            let spanish = std::ptr::eq(pattern, &SPANISH_DNI);
            let labelled = spanish
                && ["DNI", "NIE", "NIF"]
                    .iter()
                    .any(|label| scan.before(found.start(), 16).contains(label));
            let confirmed = if spanish {
                labelled || is_dni(found.as_str())
            } else {
                check(found.as_str())
            };
            if confirmed {
                scan.add(PiiKind::NationalId, found.range());
            }
        }
    }
    labelled(scan, &BIRTH_DATE, PiiKind::DateOfBirth);
    corrected_birth_dates(scan);
    labelled(scan, &NATIONAL_ID, PiiKind::NationalId);
    for found in NATIONAL_ID_NEAR.captures_iter(scan.text) {
        let value = found.get(1).expect("the pattern has a group");
        if super::formats::digits(value.as_str()).len() >= 6 {
            scan.add(PiiKind::NationalId, value.range());
        }
    }
    labelled(scan, &PERSONAL_ID, PiiKind::PersonalId);
    table_columns(scan);
}

/// A pasted table's column whose header names an identifier or a birth date: the values under
/// `emp no.`, `subject_id` or `dob` are what their header says (tab-, bar-, comma- or
/// semicolon-separated tables).
fn table_columns(scan: &mut Scan) {
    static ID_HEADER: Pattern = Pattern::new(|| {
        regex(concat!(
            r"(?i)^(?:emp(?:loyee)?[ _.-]?(?:no|nr|id|number)\.?|staff[ _-]?(?:id|no)|badge(?:[ _-]?id)?|",
            r"agent(?:[ _-]?id)?|sub(?:scriber)?[ _-]?id|subject(?:[ _-]?id)?|",
            r"cust(?:omer)?[ _-]?(?:no|id|number)|member[ _-]?(?:no|id|number)|patient[ _-]?(?:id|no)|",
            r"mrn|student[ _-]?(?:id|no)|personalnummer|pers\.?[ _-]?nr\.?|matricule|matricola)$"
        ))
    });
    static BIRTH_HEADER: Pattern = Pattern::new(|| {
        regex(concat!(
            r"(?i)^(?:dob|d\.o\.b\.?|date[ _]of[ _]birth|birth[ _]?date|birthday|geburtsdatum|",
            r"date[ _](?:de[ _])?naissance|fecha[ _](?:de[ _])?nacimiento)$"
        ))
    });
    static DATE: Pattern =
        Pattern::new(|| regex(r"^(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2})$"));
    // The table being read: its separator and its columns of private data.
    let mut table: Option<(char, Vec<(usize, PiiKind)>)> = None;
    let mut at = 0;
    let mut found = Vec::new();
    for line in scan.text.split('\n') {
        let start = at;
        at += line.len() + 1;
        let separator = ['\t', '|', ';', ',']
            .into_iter()
            .find(|&c| line.contains(c));
        let cells = |sep: char| {
            let mut offset = start;
            line.split(sep)
                .map(|cell| {
                    let range = offset..offset + cell.len();
                    offset += cell.len() + 1;
                    range
                })
                .collect::<Vec<_>>()
        };
        match (&table, separator) {
            (Some((sep, columns)), Some(found_sep)) if found_sep == *sep => {
                let row = cells(*sep);
                for &(index, kind) in columns {
                    let Some(cell) = row.get(index) else { continue };
                    let value = scan.text[cell.clone()].trim();
                    let is_value = match kind {
                        PiiKind::DateOfBirth => DATE.is_match(value),
                        _ => value.len() <= 24 && super::formats::digits(value).len() >= 3,
                    };
                    if is_value {
                        found.push((kind, cell.clone()));
                    }
                }
            }
            (_, Some(sep)) => {
                let columns: Vec<(usize, PiiKind)> = cells(sep)
                    .iter()
                    .enumerate()
                    .filter_map(|(i, cell)| {
                        let header = scan.text[cell.clone()].trim();
                        if ID_HEADER.is_match(header) {
                            Some((i, PiiKind::PersonalId))
                        } else if BIRTH_HEADER.is_match(header) {
                            Some((i, PiiKind::DateOfBirth))
                        } else {
                            None
                        }
                    })
                    .collect();
                table = (!columns.is_empty()).then_some((sep, columns));
            }
            (_, None) => table = None,
        }
    }
    for (kind, span) in found {
        scan.add(kind, span);
    }
}

/// "My date of birth shows 03/11/1988 but it should be 11/03/1988": a date written shortly after
/// a date of birth, in the same sentence and as its correction, is one too.
fn corrected_birth_dates(scan: &mut Scan) {
    static DATE: Pattern =
        Pattern::new(|| regex(r"\b(?:\d{1,2}[./-]\d{1,2}[./-]\d{4}|\d{4}-\d{2}-\d{2})\b"));
    static CORRECTION: Pattern = Pattern::new(|| {
        regex(r"(?i)\b(?:should|actually|correct|instead|but|not|richtig|sollte|debería|devrait)\b")
    });
    let births: Vec<usize> = scan
        .findings
        .iter()
        .filter(|f| f.kind == PiiKind::DateOfBirth)
        .map(|f| f.span.end)
        .collect();
    for end in births {
        let after = scan.after(end, 60);
        let sentence = after.split(['\n', '.', '?', '!']).next().unwrap_or("");
        let found: Vec<std::ops::Range<usize>> = DATE
            .find_iter(sentence)
            .filter(|m| CORRECTION.is_match(&sentence[..m.start()]))
            .map(|m| end + m.start()..end + m.end())
            .collect();
        for span in found {
            scan.add(PiiKind::DateOfBirth, span);
        }
    }
}

/// The values that follow their labels.
fn labelled(scan: &mut Scan, pattern: &Pattern, kind: PiiKind) {
    for found in pattern.captures_iter(scan.text) {
        let value = found.get(1).expect("the pattern has a group");
        let longest_digit_run = value
            .as_str()
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        let digit_count = value.as_str().chars().filter(char::is_ascii_digit).count();
        let enough = match kind {
            PiiKind::DateOfBirth => true,
            // An employee number has a run of digits; `19c x64` does not.
            PiiKind::PersonalId => longest_digit_run >= 3,
            _ => digit_count >= 3,
        };
        if enough {
            scan.add(kind, value.range());
        }
    }
}

/// The Spanish DNI's (and NIE's, with X, Y, Z read as 0, 1, 2) check letter.
fn is_dni(candidate: &str) -> bool {
    let Some(parts) = SPANISH_DNI.captures(candidate) else {
        return false;
    };
    let prefix = match &parts[1] {
        "" => "",
        "X" => "0",
        "Y" => "1",
        _ => "2",
    };
    if prefix.is_empty() && parts[2].len() != 8 || !prefix.is_empty() && parts[2].len() != 7 {
        return false;
    }
    let number: u64 = format!("{prefix}{}", &parts[2]).parse().unwrap_or(0);
    let letter = b"TRWAGMYFPDXBNJZSQVHLCKE"[(number % 23) as usize];
    parts[3].as_bytes()[0] == letter
}

/// The French NIR's key: 97 minus the first 13 digits modulo 97 (Corsica's 2A and 2B read as 19
/// and 18).
fn is_nir(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() != 15 {
        return false;
    }
    let body = compact[..13].replace("2A", "19").replace("2B", "18");
    let (Ok(number), Ok(key)) = (body.parse::<u64>(), compact[13..].parse::<u64>()) else {
        return false;
    };
    97 - number % 97 == key
}
