//! Names of private individuals, read from their context, since a name alone is just a word: a
//! known given name followed by a surname (`Maria Keller`, `Jean-Pierre van der Berg`), a title
//! and a surname (`Mr Okafor`, `Frau Schneider`), a name after a relationship (`my colleague
//! Priya`, `ma collègue Inès`), a signature at the end of a message, a given name's possessive
//! before data about a person (`Tom's payslip`), and a given name in running text that neither
//! greets the assistant nor belongs to a public figure, a place or a date.
//!
//! Given names come from `router/data/given_names.txt` (about 4,000 from many cultures, none
//! that is also a common word); public figures' surnames and words that follow names without
//! being surnames (`Maria Team`, `Anna Monday`) are excluded.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use super::{Pattern, PiiKind, Scan, regex};

static GIVEN: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/given_names.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// Capitalised words that follow a given name without being a surname.
const NOT_SURNAMES: &[&str] = &[
    "A",
    "About",
    "Admin",
    "After",
    "Again",
    "All",
    "Also",
    "Am",
    "An",
    "And",
    "Any",
    "Are",
    "As",
    "At",
    "Be",
    "Because",
    "Before",
    "Best",
    "But",
    "By",
    "Can",
    "Cc",
    "Cheers",
    "Could",
    "Dear",
    "Did",
    "Do",
    "Does",
    "Done",
    "Excel",
    "FYI",
    "For",
    "From",
    "Good",
    "Has",
    "Have",
    "He",
    "Hello",
    "Her",
    "Here",
    "Hey",
    "Hi",
    "His",
    "How",
    "I",
    "If",
    "In",
    "Is",
    "It",
    "Its",
    "Just",
    "Let",
    "Many",
    "May",
    "Me",
    "My",
    "No",
    "Not",
    "Now",
    "Of",
    "Office",
    "Ok",
    "Okay",
    "On",
    "Or",
    "Our",
    "Outlook",
    "Please",
    "Re",
    "Regards",
    "She",
    "Should",
    "So",
    "Sorry",
    "Still",
    "Subject",
    "Support",
    "Team",
    "Teams",
    "Thank",
    "Thanks",
    "That",
    "The",
    "Their",
    "Then",
    "There",
    "They",
    "This",
    "To",
    "Today",
    "Tomorrow",
    "Was",
    "We",
    "Were",
    "What",
    "When",
    "Where",
    "Which",
    "Who",
    "Why",
    "Will",
    "Windows",
    "With",
    "Would",
    "Yes",
    "Yesterday",
    "You",
    "Your",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "January",
    "February",
    "March",
    "April",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Manager",
    "Director",
    "Lead",
    "Engineer",
    "Analyst",
    "Department",
    "Dept",
    "Group",
    "Bank",
    "Street",
    "Road",
    "Avenue",
    "Corp",
    "Inc",
    "Ltd",
    "GmbH",
    "Street",
    "Und",
    "Der",
    "Die",
    "Das",
    "Ist",
    "Ich",
    "Bitte",
    "Danke",
    "Et",
    "Le",
    "La",
    "Les",
    "Est",
    "Merci",
    "Bonjour",
    "Y",
    "El",
    "Los",
    "Las",
    "Es",
    "Gracias",
    "Hola",
    "Por",
    "Para",
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Lundi",
    "Mardi",
    "Mercredi",
    "Jeudi",
    "Vendredi",
    "Lunes",
    "Martes",
    "Miércoles",
    "Jueves",
    "Viernes",
    "Slack",
    "Zoom",
    "Jira",
    "Confluence",
    "Salesforce",
    "Workday",
    "SAP",
    "Github",
    "GitHub",
    "Python",
    "Java",
];

/// Surnames of people whose names are public: a question about them is not private data.
const PUBLIC_FIGURES: &[&str] = &[
    "Einstein",
    "Curie",
    "Newton",
    "Darwin",
    "Buffett",
    "Musk",
    "Shakespeare",
    "Churchill",
    "Merkel",
    "Macron",
    "Obama",
    "Biden",
    "Trump",
    "Mozart",
    "Beethoven",
    "Picasso",
    "Vinci",
    "Turing",
    "Lovelace",
    "Keynes",
    "Marx",
    "Freud",
    "Hawking",
    "Feynman",
    "Gandhi",
    "Mandela",
    "Hemingway",
    "Orwell",
    "Tolkien",
    "Rowling",
    "Bezos",
    "Zuckerberg",
    "Nadella",
    "Pichai",
    "Altman",
    "Wozniak",
    "Torvalds",
    "Knuth",
    "Dijkstra",
    "Stroustrup",
    "Rossum",
    "Berners-Lee",
    "Euler",
    "Gauss",
    "Fermat",
    "Markowitz",
    "Scholes",
    "Kahneman",
    "Pasteur",
    "Nightingale",
    "Copernicus",
    "Galilei",
    "Kepler",
    "Planck",
    "Heisenberg",
    "Schrödinger",
    "Faraday",
    "Edison",
    "Carnegie",
    "Rockefeller",
    "Dalio",
    "Soros",
    "Munger",
    "Drucker",
    "Bonaparte",
    "Roosevelt",
    "Thatcher",
    "Sunak",
    "Starmer",
    "Lagarde",
    "Yellen",
    "Goethe",
    "Kafka",
    "Cervantes",
    "Dalí",
    "Kahlo",
    "Presley",
    "Lennon",
    "McCartney",
    "Beyoncé",
    "Messi",
    "Ronaldo",
    "Federer",
    "Nadal",
    "Gagarin",
    "Jefferson",
    "Aristotle",
    "Nietzsche",
    "Descartes",
    "Voltaire",
    "Tocqueville",
    "Hayek",
    "Schumpeter",
    "Piketty",
    "Krugman",
    "Bernanke",
    "Greenspan",
    "Volcker",
    "Draghi",
    "Bosch",
    "Daimler",
    "Benz",
    "Porsche",
    "Siemens",
    "Zeiss",
    "Diesel",
    "Disney",
    "Hewlett",
    "Packard",
    "Velázquez",
    "Goya",
    "Gaudí",
    "Rembrandt",
    "Vermeer",
    "Bach",
    "Chopin",
    "Tesla",
    "Buffet",
    "Schuman",
    "Monnet",
];
/// Public figures whose surnames are common ones.
const PUBLIC_FULL_NAMES: &[&str] = &[
    "Adam Smith",
    "Martin Luther King",
    "Tim Cook",
    "Henry Ford",
    "Taylor Swift",
    "Neil Armstrong",
    "Benjamin Franklin",
    "Alexander Hamilton",
    "Victor Hugo",
    "Jean-Jacques Rousseau",
    "John Stuart Mill",
    "John Nash",
    "Bill Gates",
    "Steve Jobs",
    "Abraham Lincoln",
    "George Washington",
    "Jane Austen",
    "Charles Dickens",
    "Isaac Newton",
    "Pedro Sánchez",
    "Olaf Scholz",
    "Jerome Powell",
    "John Maynard Keynes",
    "Frederick Taylor",
    "Michael Porter",
    "Peter Lynch",
    "Benjamin Graham",
    "Grace Hopper",
    "Dennis Ritchie",
    "Ken Thompson",
    "Thomas Bayes",
    "Michael Jordan",
    "Magic Johnson",
    "Robert Bosch",
    "Gottlieb Daimler",
    "Carl Benz",
    "Ferdinand Porsche",
    "Werner von Siemens",
];

/// Given names that are more often a place, a product or a programming language.
const NOT_PEOPLE: &[&str] = &[
    "Paris",
    "Milan",
    "Lorraine",
    "Kent",
    "Florence",
    "Victoria",
    "Georgia",
    "Jordan",
    "Austin",
    "Chelsea",
    "Sydney",
    "Madison",
    "Lincoln",
    "Ford",
    "Mercedes",
    "Tesla",
    "Dell",
    "Siri",
    "Alexa",
    "Cortana",
    "Claude",
    "Gemini",
    "Copilot",
    "Jenkins",
    "Kafka",
    "Ada",
    "Julia",
    "Pascal",
    "Haskell",
    "Django",
    "Laravel",
    "Ansible",
    "Oracle",
    "Sage",
    "Adobe",
    "Santiago",
    "Valencia",
    "Lyon",
    "Orlando",
    "Phoenix",
    "Dallas",
    "Houston",
    "Denver",
    "Florida",
    "Carolina",
    "Virginia",
    "Montana",
    "Dakota",
    "Indiana",
    "Nevada",
    "Regina",
    "Adelaide",
    "Alexandria",
    "Santa",
    "Christmas",
    "Easter",
    "Monday",
    "Siemens",
    "Bosch",
    "Philips",
    "Ferrari",
    // Months and places written like names.
    "Jan",
    "Carlo",
    "Lloyd",
    "Lloyds",
];

const NAME_WORD: &str = r"\p{Lu}['’]?\p{Lu}?\p{Ll}+(?:\p{Lu}\p{Ll}+)?(?:-\p{Lu}\p{Ll}+)*";
const PARTICLE: &str =
    r"(?:van|von|der|den|de|da|del|della|di|du|la|le|bin|ibn|al|el|ter|ten|zu|dos|das|y)";

/// One capitalised word shaped like a name.
static WORD: Pattern = Pattern::new(|| regex(&format!(r"\b{NAME_WORD}\b")));
/// Runs of capitalised words, with the particles of surnames between them.
static RUN: Pattern = Pattern::new(|| {
    regex(&format!(
        r"\b{NAME_WORD}(?:[ \t]+(?:{PARTICLE}[ \t]+)*{NAME_WORD}){{1,4}}\b"
    ))
});
static TITLED: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Herrn|Frau|Mme|Mlle|Madame|Monsieur|Maître|Me|M|Sr|Sra|Srta|",
            r"Señor|Señora|Doña|Don|Sir|Ma['’]am|Madam|Kuya|Atty|Engr|Avv|Dott\.ssa|Dott|Ing|Sig\.ra|Sig)",
            r"\.?[ \t]+((?:{p}[ \t]+)*{w}(?:[ \t]+{w})?)\b"
        ),
        p = PARTICLE,
        w = NAME_WORD
    ))
});
/// A relationship or role, then a name: `my colleague Priya`, `mein Kollege Jonas Weber`.
static RELATED: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"(?i:\b(?:my|our|your|his|her|their|mon|ma|notre|mein|meine|meinem|meiner|meinen|",
            r"unser|unsere|unserem|unserer|mi|nuestro|nuestra)\s+",
            r"(?:new\s+|former\s+|ex-?|neuen?\s+|neuer\s+|nouveau\s+|nouvelle\s+|nuevo\s+|nueva\s+)?",
            r"(?:colleague|co-?worker|teammate|team ?mate|manager|line manager|boss|supervisor|",
            r"team ?lead|lead|director|employee|direct report|report|intern|assistant|secretary|",
            r"wife|husband|partner|son|daughter|friend|mother|mom|mum|father|dad|brother|sister|",
            r"tenant|neighbou?r|trainee|apprentice|deputy|nurse|hire|new starter|girlfriend|boyfriend|",
            r"fianc[ée]e?|mother[- ]in[- ]law|father[- ]in[- ]law|grandfather|grandmother|grandma|",
            r"grandpa|uncle|aunt|cousin|niece|nephew|landlord|landlady|foreman|team leader|meister|",
            r"collègue|chef|cheffe|responsable|employée?|stagiaire|mari|femme|fils|fille|",
            r"kollegin|kollege|kollegen|chef|chefin|vorgesetzten?|vorgesetzter|mitarbeiter(?:in)?|",
            r"azubi|praktikant(?:in)?|mann|frau|sohn|tochter|compañer[oa]|jef[ea]|emplead[oa]|",
            r"colega|marido|espos[oa]|hij[oa]|amig[oa]))\b,?[ \t]+({w}(?:[ \t]+{w})?)\b"
        ),
        w = NAME_WORD
    ))
});
/// An initial and a surname: `S. Keller`, `J.-P. Moreau` (not `Plan B. Then`, which follows a
/// capitalised word).
static INITIALLED: Pattern = Pattern::new(|| {
    regex(&format!(
        r"(?:^|[\s(|,;])(\p{{Lu}}\.(?:-?\p{{Lu}}\.)?)[ \t]?({NAME_WORD})\b"
    ))
});
/// A given name's possessive before data about a person: `Priya's payslip`.
static POSSESSIVE: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"\b({w})['’]s\s+(?:new\s+|last\s+|latest\s+|annual\s+|final\s+)?(?i:salary|payslip|",
            r"pay|bonus|address|phone|number|birthday|contract|review|appraisal|performance|",
            r"diagnosis|sick|leave|maternity|paternity|medical|visa|passport|id|pension|",
            r"disciplinary|dismissal|termination|raise|overtime|account|expenses|record|file|",
            r"details|start date|notice|resignation|wedding|baby|leaving)\b"
        ),
        w = NAME_WORD
    ))
});
/// A closing line of a message (`Thanks,`, `Kind regards`, `Merci`, `Saludos`).
static CLOSING: Pattern = Pattern::new(|| {
    regex(concat!(
        r"(?i)^\s*(?:thanks|thank you|thx|ty|many thanks|regards|kind regards|best regards|best|",
        r"cheers|br|kr|merci|cordialement|bien à vous|bonne journée|danke|vielen dank|",
        r"viele grüße|beste grüße|grüße|gruß|lg|vg|mfg|gracias|saludos|un saludo|atentamente|",
        r"un abrazo)(?:\s+(?:in advance|again|a lot|so much|d'avance))?[,.!]*\s*(.*)$",
    ))
});
/// A closing and a name at the end of a message's last line: `… any idea? thx, Gülsen Arslan`.
static CLOSING_INLINE: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"(?i:\b(?:thanks|thank you|thx|ty|cheers|regards|merci|danke|gracias|saludos|grüße))",
            r"[,.!]*\s+[-–—]?\s*({w}(?:[ \t]+{w}){{0,2}})[.!]?\s*$"
        ),
        w = NAME_WORD
    ))
});
static SIGNATURE: Pattern = Pattern::new(|| {
    regex(&format!(
        r"^[-–—/~ ]*({NAME_WORD}(?:[ \t]+{NAME_WORD}){{0,2}})[.!]?\s*$"
    ))
});

pub(super) fn find(scan: &mut Scan) {
    for found in TITLED.captures_iter(scan.text) {
        let name = found.get(1).expect("the pattern has a group");
        if !is_not_a_surname(name.as_str()) {
            scan.add(PiiKind::Person, found.get(0).expect("a match").range());
        }
    }
    for found in RELATED.captures_iter(scan.text) {
        let name = found.get(1).expect("the pattern has a group");
        if let Some(span) = leading_name(scan.text, name.range()) {
            scan.add(PiiKind::Person, span);
        }
    }
    for found in RUN.find_iter(scan.text) {
        if let Some(span) = full_name(scan.text, found.range()) {
            scan.add(PiiKind::Person, span);
        }
    }
    for found in INITIALLED.captures_iter(scan.text) {
        let surname = found.get(2).expect("the pattern has a group");
        let initial = found.get(1).expect("the pattern has a group");
        let before = scan.before(initial.start(), 24);
        let same_line = before.rsplit('\n').next().unwrap_or("");
        let after_a_name_word = same_line
            .split_whitespace()
            .next_back()
            .is_some_and(|w| w.starts_with(char::is_uppercase) && !w.ends_with([':', '|', ',']));
        if !is_not_a_surname(surname.as_str()) && !after_a_name_word {
            scan.add(PiiKind::Person, initial.start()..surname.end());
        }
    }
    signature(scan);
    for found in POSSESSIVE.captures_iter(scan.text) {
        let name = found.get(1).expect("the pattern has a group");
        if GIVEN.contains(name.as_str()) {
            scan.add(PiiKind::Person, name.range());
        }
    }
    given_names_in_passing(scan);
    identifiers_beside_names(scan);
}

/// A company-style identifier (`VM-118204`, `E-31877`) right beside a person's name is that
/// person's number (`Noor Benali, VM-118204`).
fn identifiers_beside_names(scan: &mut Scan) {
    static IDENTIFIER: Pattern = Pattern::new(|| regex(r"\b[A-Z]{1,4}-?\d{4,8}\b"));
    let candidates: Vec<Range<usize>> = IDENTIFIER
        .find_iter(scan.text)
        .map(|m| m.range())
        .filter(|span| scan.has_finding_near(span, 24, &[PiiKind::Person]))
        .collect();
    for span in candidates {
        scan.add(PiiKind::PersonalId, span);
    }
}

/// A given name, or a compound one whose first part is (`Hans-Peter`).
fn is_given(word: &str) -> bool {
    GIVEN.contains(word)
        || word
            .split_once('-')
            .is_some_and(|(first, _)| GIVEN.contains(first))
}

fn is_not_a_surname(word: &str) -> bool {
    NOT_SURNAMES.contains(&word) || PUBLIC_FIGURES.contains(&word)
}

/// Words of `span` with their byte ranges.
fn words(text: &str, span: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text[span.clone()].char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(span.start + s..span.start + i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(span.start + s..span.end);
    }
    out
}

fn is_particle(word: &str) -> bool {
    matches!(
        word,
        "van"
            | "von"
            | "der"
            | "den"
            | "de"
            | "da"
            | "del"
            | "della"
            | "di"
            | "du"
            | "la"
            | "le"
            | "bin"
            | "ibn"
            | "al"
            | "el"
            | "ter"
            | "ten"
            | "zu"
            | "dos"
            | "das"
            | "y"
    )
}

/// Words that ask about someone known to all: `who was Barbara McClintock`, `a profile of
/// Umberto Eco`.
static ABOUT_A_PUBLIC_FIGURE: Pattern = Pattern::new(|| {
    regex(concat!(
        r"(?i)\b(?:who (?:was|is|were)|profile of|biography of|obituary of|life of|story of|",
        r"works of|quotes? (?:by|from)|famous|the late|nobel (?:prize )?(?:winner|laureate)|",
        r"qui (?:était|est)|quién (?:fue|es)|wer (?:war|ist))\s+$"
    ))
});

/// In a run of capitalised words, a given name and the surname after it (with its particles).
fn full_name(text: &str, run: Range<usize>) -> Option<Range<usize>> {
    let words = words(text, run);
    let first = words
        .iter()
        .position(|w| is_given(&text[w.clone()]) && !NOT_SURNAMES.contains(&&text[w.clone()]))?;
    let mut end = None;
    for w in &words[first + 1..] {
        let word = &text[w.clone()];
        if is_particle(word) {
            continue;
        }
        if NOT_SURNAMES.contains(&word) {
            break;
        }
        end = Some(w.end);
        if !GIVEN.contains(word) {
            break; // a surname: the name ends here
        }
    }
    let end = end?;
    let last = &text[words.iter().rev().find(|w| w.end == end)?.clone()];
    let full = &text[words[first].start..end];
    let public = PUBLIC_FIGURES.contains(&last)
        || PUBLIC_FULL_NAMES.contains(&full)
        || ABOUT_A_PUBLIC_FIGURE.is_match(&text[..words[first].start]);
    (!public).then_some(words[first].start..end)
}

/// A name after a relationship: one word, or two when the second is not a common word.
fn leading_name(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let words = words(text, span);
    let first = &text[words.first()?.clone()];
    if is_not_a_surname(first) {
        return None;
    }
    match words.get(1) {
        Some(second) if !is_not_a_surname(&text[second.clone()]) => {
            Some(words[0].start..second.end)
        }
        _ => Some(words[0].clone()),
    }
}

/// The name on the last line of a message after a closing (`Thanks,\nAnna Weber`), or on the
/// closing line itself (`thanks, Anna`).
fn signature(scan: &mut Scan) {
    let lines: Vec<(usize, &str)> = scan
        .text
        .split('\n')
        .scan(0, |at, line| {
            let start = *at;
            *at += line.len() + 1;
            Some((start, line))
        })
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let Some(&(last_at, last)) = lines.last() else {
        return;
    };
    let closing_before = lines.len() >= 2
        && CLOSING
            .captures(lines[lines.len() - 2].1)
            .is_some_and(|c| c[1].trim().is_empty());
    let candidate = if closing_before {
        SIGNATURE
            .captures(last)
            .and_then(|c| c.get(1))
            .map(|m| (last_at, m.range()))
    } else {
        CLOSING_INLINE
            .captures(last)
            .and_then(|c| c.get(1))
            .map(|name| (last_at, name.range()))
    };
    if let Some((at, span)) = candidate {
        let span = at + span.start..at + span.end;
        let first = words(scan.text, span.clone());
        let single = first.len() == 1;
        let given = first
            .first()
            .is_some_and(|w| GIVEN.contains(&scan.text[w.clone()]));
        let common = first
            .iter()
            .any(|w| NOT_SURNAMES.contains(&&scan.text[w.clone()]));
        if (given || !single) && !common {
            scan.add(PiiKind::Person, span);
        }
    }
}

/// A given name in running text names someone, unless it greets or addresses the assistant
/// (`Hi Anna`, `Anna, …` at the start), belongs to a public figure, or is more often a place or
/// a product.
fn given_names_in_passing(scan: &mut Scan) {
    let candidates: Vec<Range<usize>> = WORD
        .find_iter(scan.text)
        .filter(|w| GIVEN.contains(w.as_str()) && !NOT_PEOPLE.contains(&w.as_str()))
        .map(|w| w.range())
        .filter(|w| names_someone(scan, w))
        .collect();
    for span in candidates {
        scan.add(PiiKind::Person, span);
    }
}

/// Whether a given name at `w` names a person: not greeting or addressing the assistant
/// (`Hi Anna`, `Anna, …` at the start), not a public figure, not a place (`our Charlotte
/// office`) or a date (`1 Jan 2027`).
fn names_someone(scan: &Scan, w: &Range<usize>) -> bool {
    static GREETING: Pattern = Pattern::new(|| {
        regex(concat!(
            r"(?i)(?:^|\n)\s*(?:hi|hello|hey|dear|hallo|hola|bonjour|salut|ciao|servus|moin|",
            r"good morning|morning|good afternoon|good evening|buenos días|buenas|guten morgen|",
            r"guten tag)[ ,!]*$"
        ))
    });
    static PLACE_OR_DATE: Pattern = Pattern::new(|| {
        regex(concat!(
            r"^\s+(?:\d|(?:\w+\s+)?(?i:office|branch|site|plant|airport|station|street|road|",
            r"campus|store|warehouse|team|area|region|hub|center|centre)\b)"
        ))
    });
    // `in Milan`, `near Florence`, `the Austin office`: a place, not a person (`to Maria` and
    // `de Marie` may name one).
    static PLACE_BEFORE: Pattern =
        Pattern::new(|| regex(r"(?i)\b(?:in|at|near|via|around|the|nach|en|desde|hacia)\s+$"));
    let placed = PLACE_BEFORE.is_match(scan.before(w.start, 12));
    let greeted = GREETING.is_match(scan.before(w.start, 24));
    let addressed = w.start < 4
        && scan.before(w.start, 4).trim().is_empty()
        && scan.after(w.end, 1).starts_with([',', ':', '!']);
    let next = scan.after(w.end, 40);
    let dated = scan
        .before(w.start, 3)
        .trim_end()
        .ends_with(|c: char| c.is_ascii_digit());
    let ends_word = |rest: &str, s: &str| {
        rest.starts_with(s) && !rest[s.len()..].starts_with(char::is_alphanumeric)
    };
    let public_surname = next
        .strip_prefix(' ')
        .is_some_and(|rest| PUBLIC_FIGURES.iter().any(|s| ends_word(rest, s)));
    let from_here = scan.after(w.start, 40);
    let public = public_surname
        || PUBLIC_FULL_NAMES.iter().any(|s| ends_word(from_here, s))
        || ABOUT_A_PUBLIC_FIGURE.is_match(scan.before(w.start, 40));
    !greeted && !addressed && !dated && !public && !placed && !PLACE_OR_DATE.is_match(next)
}
