//! Postal addresses: a house number with a street word (`221B Baker Street`, `Hauptstraße 12`,
//! `12 rue de la Paix`, `Calle Mayor 5`), a US city with its state and ZIP code, a UK postcode,
//! or a European postcode with its city after a street or an address label. A street followed by
//! its postcode and city is one finding.

use super::{Pattern, PiiKind, Scan, regex};

/// Street words whose meaning is plain in any case; the ambiguous ones (`Way`, `Close`,
/// `Place`, `Drive`…) only capitalised.
const STREET: &str = concat!(
    r"(?i:street|st\.?|avenue|ave\.?|road|rd\.?|boulevard|blvd\.?|lane|ln\.?|terrace|crescent|",
    r"parkway|pkwy|highway|hwy)|Way|Close|Place|Drive|Dr\.?|Court|Ct\.?|Square|Row|Mews|Walk|",
    r"Hill|Gardens|Grove|Circle|Park|Green|Rise|Vale"
);
/// The US states and territories' postal abbreviations.
const STATES: &str = concat!(
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|",
    "NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|PR|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY"
);
/// A UK postcode: `SW1A 1AA`, `M1 1AE`, `CF10 3AT`.
const UK_POSTCODE: &str = r"\b[A-Z]{1,2}\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2}\b";
/// A city's name: up to three capitalised words.
const CITY: &str = r"[\p{Lu}][\p{L}'’.-]+(?:[ -][\p{Lu}][\p{L}'’.-]+){0,2}";
/// What may follow a street: a flat, the postcode and city, the state and ZIP code.
fn tail() -> String {
    format!(
        concat!(
            r"(?:,?\s+(?i:apt|apartment|flat|suite|unit|piso|étage|bte)\.?\s*#?\w+)?",
            r"(?:(?:,\s*|\s+)(?:\d{{4,5}}|{uk})\s+{city}|,\s*{city})?",
            r"(?:,?\s+(?:{states}))?(?:,?\s+\d{{5}}(?:-\d{{4}})?)?",
        ),
        uk = UK_POSTCODE,
        city = CITY,
        states = STATES,
    )
}

static ADDRESS: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            // English: a number, capitalised words, a street word.
            r"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[\p{{Lu}}\d][\p{{L}}\d'’.-]*\s+){{1,4}}(?:{street})\b{tail}",
            // The same typed in lower case, with a plain street word.
            r"|\b\d{{1,5}}[a-z]?\s+[a-z]{{3,}}(?:\s[a-z]{{3,}})?\s+(?:street|st|avenue|ave|road|rd|blvd|lane)\b{tail}",
            // German, Dutch, Scandinavian: the street word glued to the name, then the number.
            r"|\b[\p{{Lu}}][\p{{L}}-]*(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm|ufer|",
            r"chaussee|straat|laan|plein|gracht|gatan|vej|vejen|veien|gade|vägen)\s+\d{{1,4}}\s?[a-z]?\b{tail}",
            // German with the street word apart: `Eppendorfer Weg 112`, `Plochinger Str. 41`.
            r"|\b[\p{{Lu}}][\p{{L}}-]+\s(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Ring|Damm|Ufer|Chaussee)",
            r"\s+\d{{1,4}}\s?[a-z]?\b{tail}",
            // German streets named by a preposition: `Am Lindenhof 7`, `An der Alster 12`.
            r"|\b(?:Am|An der|Auf der|Im|In der|Zum|Zur)\s[\p{{Lu}}][\p{{L}}-]+\s\d{{1,4}}\s?[a-z]?\b{tail}",
            // French: a number, a street word, its name.
            r"|\b\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+(?:(?i:rue|avenue|boulevard|bd|allée|impasse|quai|chemin)",
            r"|Place|Route|Cours|Square)\s+(?:(?:de|du|des|de la|d')\s*)?",
            r"[\p{{L}}'’-]+(?:\s+[\p{{Lu}}][\p{{L}}'’-]+){{0,3}}{tail}",
            // Spanish, Italian, Portuguese: a street word, its name, the number.
            r"|(?:\b(?i:calle|avenida|avda|paseo|plaza|pza|carrera|camino|carrer|passeig|avinguda|pasaje)|\bC/|\bAv\.|",
            r"\b(?:Via|Viale|Piazza|Corso|Rua|Ronda))",
            r"\.?\s+(?:(?:de|del|de la|dei|della|da|do)\s+)?",
            r"[\p{{L}}'’-]+(?:\s+[\p{{L}}'’-]+){{0,3}},?\s+(?:n[º°o]\.?\s*)?\d{{1,4}}\b{tail}",
            // A US city, its state and ZIP code.
            r"|\b{city},\s*(?:{states})\s+\d{{5}}(?:-\d{{4}})?\b",
            // A UK postcode.
            r"|{uk}",
        ),
        street = STREET,
        tail = tail(),
        states = STATES,
        uk = UK_POSTCODE,
        city = CITY,
    ))
});
/// What follows an address label: `my home address is 4 Elm Row, Leeds`, `wohne in 20095 Hamburg`.
static LABELLED: Pattern = Pattern::new(|| {
    regex(concat!(
        r"(?i:\b(?:(?:my|his|her|their|home|postal|mailing|new|private|current|residential|shipping)",
        r"\s+address(?:\s+is)?|address\s*:|lives? at|living at|moved to|adresse|anschrift|",
        r"wohnt? in|wohnhaft in|wohne in|domicile|domicilié(?:e)? à|habite au|dirección|domicilio|",
        r"vivo en|vive en|resid(?:e|es|ing) at))\s*[:=]?\s*",
        r"(\d{1,5}\s?[a-z]?,?\s+[^\n,]{3,40}(?:,\s*[^\n,]{2,30}){0,2}|\d{4,5}\s+[\p{Lu}][\p{L}-]+)",
    ))
});

pub(super) fn find(scan: &mut Scan) {
    for found in ADDRESS.find_iter(scan.text) {
        scan.add(PiiKind::Address, found.range());
    }
    for found in LABELLED.captures_iter(scan.text) {
        let value = found.get(1).expect("the pattern has a group");
        scan.add(PiiKind::Address, value.range());
    }
}
