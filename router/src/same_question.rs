//! Whether two questions could share an answer, as far as their words tell: the semantic cache's
//! guard. Sentence embeddings place "enable 2FA" next to "disable 2FA" and "5 days of leave"
//! next to "10 days of leave", closer than many true paraphrases; a cached answer served across
//! such a pair is wrong. So the cache serves one question's answer to another only when their
//! embeddings are close *and* their [`Gist`]s agree:
//!
//! - the same numbers in the same order (digits, number words, the digits inside "Q3", "win11",
//!   "$500"): "from sheet 1 to sheet 2" is not "from sheet 2 to sheet 1";
//! - the same negations, where the rest of one question is all in the other ("can I expense a
//!   taxi" and "can't I …"; "vpn broken" and "vpn isn't working" may differ);
//! - the same polar words: where both questions use a group of alternatives (on/off,
//!   add/remove, install/uninstall, before/after, pass/fail, am/pm, I/he, …), the same ones;
//!   and no word of one whose negated form ("unpaid", "non-billable") is in the other;
//! - no name swapped for another (words written with capitals: "Berlin" and "Munich");
//! - no role swapped: what follows "from", "to", "into", "than" in one is not what follows
//!   another of them in the other ("from savings to checking"), and not the same words in
//!   another order ("can interns supervise contractors");
//! - not one content word exchanged for another with the rest the same ("install the
//!   certificate" and "renew the certificate"): a paraphrase rewords more than one word, or
//!   leaves it to the embedding's threshold.
//!
//! Each rule only ever refuses: a paraphrase it refuses costs a remote or local answer, a false
//! hit costs a wrong one.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

/// The cosine of two questions' embeddings (all-MiniLM-L6-v2) above which the semantic cache
/// serves one's answer to the other, when their words agree. Measured on
/// `router/data/cache_pairs.jsonl` (`switchboard router cache-pairs`): at 0.95 no near miss of
/// the development split is served and 1 of 111 of the test split (a change of scope); lower
/// thresholds serve more paraphrases and more near misses.
pub const DEFAULT_SIMILARITY: f32 = 0.95;

/// What a question's words commit it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gist {
    numbers: Vec<String>,
    negations: usize,
    /// Polar words: (their group in [`POLAR`], their class in it).
    polar: BTreeSet<(usize, usize)>,
    names: BTreeSet<String>,
    /// Content words (stemmed), in order.
    words: Vec<String>,
    /// What follows each role marker: (marker, content word).
    roles: BTreeSet<(&'static str, String)>,
}

/// Why two questions may not share an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disagreement {
    Numbers,
    Negation,
    Polarity,
    Names,
    Roles,
    Substitution,
}

impl Disagreement {
    pub fn as_str(self) -> &'static str {
        match self {
            Disagreement::Numbers => "numbers",
            Disagreement::Negation => "negation",
            Disagreement::Polarity => "polarity",
            Disagreement::Names => "names",
            Disagreement::Roles => "roles",
            Disagreement::Substitution => "substitution",
        }
    }
}

const NEGATIONS: &[&str] = &[
    "not", "no", "non", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor",
    "without", "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
    "wont", "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt", "mustnt", "neednt",
    "aint", "unable",
];

/// Groups of alternatives: each group's classes (synonyms within a class, `|`-separated) are
/// each other's opposites or alternatives. Two questions that use different classes of a group
/// ask different things; one that uses none of a group leaves it open ("2FA setup" may be
/// "enable 2FA"), which the embedding weighs. Words are matched by their [`stem`].
const POLAR: &[&[&str]] = &[
    &["on", "off"],
    &["in", "out"],
    &["up", "down"],
    &["add", "remove|delete"],
    &["enable|activate", "disable|deactivate"],
    &["install", "uninstall", "reinstall", "renew", "update"],
    &[
        "allow|permit|allowlist|whitelist",
        "deny|block|forbid|prohibit|blocklist|blacklist",
        "unblock",
    ],
    &["accept", "reject|decline|refuse", "forward"],
    &["approve", "disapprove|reject|deny", "submit"],
    &["increase|raise|extend", "decrease|reduce|lower|shorten"],
    &["upload", "download"],
    &["import", "export"],
    &["open", "close", "reopen"],
    &[
        "start|begin",
        "stop|end|finish|close",
        "pause",
        "resume",
        "cancel",
    ],
    &["lock", "unlock"],
    &["include", "exclude"],
    &["before|prior", "after", "during"],
    &["buy|purchase", "sell"],
    &["send", "receive"],
    &["hire", "fire"],
    &["join", "leave"],
    &["subscribe", "unsubscribe"],
    &["connect", "disconnect"],
    &["encrypt", "decrypt"],
    &["grant", "revoke"],
    &["create", "delete"],
    &["book|reserve", "cancel", "release"],
    &["push", "pull"],
    &["merge", "split"],
    &["minimum|min", "maximum|max"],
    &["more", "less|fewer"],
    &["higher", "lower"],
    &["earlier|earliest", "later|latest"],
    &["first", "last"],
    &["new", "old"],
    &["incoming|inbound", "outgoing|outbound"],
    &["credit", "debit"],
    &["deposit", "withdraw"],
    &["upgrade", "downgrade"],
    &["show|unhide", "hide"],
    &["mute", "unmute"],
    &["public", "private"],
    &["internal", "external"],
    &["pin", "unpin"],
    &["archive", "unarchive|restore"],
    &["assign", "unassign"],
    &["login|signin", "logout|signout"],
    &["encode", "decode"],
    &["zip|compress", "unzip|decompress|extract"],
    &["mount", "unmount"],
    &["follow", "unfollow"],
    &["share", "unshare"],
    &["link", "unlink"],
    &["check", "uncheck"],
    &["select", "deselect"],
    &["read", "unread"],
    &["required|mandatory", "optional"],
    &["pass|succeed", "fail"],
    &["win|won", "lose|lost"],
    &["full", "part|partial", "half"],
    &["am", "pm"],
    &[
        "second|sec",
        "minute|min",
        "hour|hr",
        "day",
        "week",
        "month",
        "year",
        "night",
    ],
    &[
        "daily",
        "weekly",
        "monthly",
        "yearly|annual|annually",
        "quarterly",
        "hourly",
    ],
    &["today", "tomorrow", "yesterday", "tonight"],
    &[
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ],
    &[
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ],
    &[
        "i|me|my|mine|myself|we|us|our|ours",
        "he|him|his",
        "she|her|hers",
        "they|them|their|theirs",
    ],
    &["manager", "employee|staff", "contractor"],
    &["who", "when", "where", "why", "much|many"],
    &["staging", "production|prod", "test|testing|dev|development"],
    &["windows", "mac|macos|macbook", "linux"],
];

/// Words whose following content word is a role: "from X to Y".
const ROLE_MARKERS: &[&str] = &["from", "to", "into", "onto", "than", "vs", "versus"];

/// Number words, as the digits they stand for. "One" is left out: it is more often a
/// determiner ("one of my keys") than a count.
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("fifteen", "15"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("million", "1000000"),
    ("billion", "1000000000"),
    ("twice", "2"),
    ("double", "2"),
    ("triple", "3"),
    ("dozen", "12"),
    ("third", "3"),
    ("fourth", "4"),
    ("fifth", "5"),
];

/// Letters that follow a number without changing it ("3rd", "21st").
const ORDINAL_SUFFIXES: &[&str] = &["st", "nd", "rd", "th"];

/// Words too common to carry a request's meaning: their order and presence are left to the
/// embedding.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "if", "then", "so", "of", "for", "at", "by", "with",
    "about", "as", "into", "onto", "over", "under", "again", "is", "are", "was", "were", "be",
    "been", "being", "do", "does", "did", "doing", "have", "has", "had", "having", "can", "could",
    "would", "should", "will", "shall", "might", "must", "may", "this", "that", "these", "those",
    "it", "its", "what", "which", "who", "whom", "whose", "how", "why", "when", "where", "there",
    "here", "please", "pls", "plz", "thanks", "thank", "hi", "hello", "hey", "just", "also", "any",
    "some", "all", "each", "every", "very", "really", "get", "got", "need", "want", "like", "know",
    "tell", "let", "im", "ive", "id", "ill", "youre", "whats", "hows", "wheres", "whens", "anyone",
    "someone", "way", "ways", "possible", "able", "help", "quick", "question", "s", "t", "d", "ll",
    "re", "ve", "m", "ok", "okay", "yes", "i", "me", "my", "mine", "myself", "we", "us", "our",
    "ours", "you", "your", "yours", "to", "from", "in", "on", "than", "vs", "versus", "steps",
    "step", "anymore",
];

/// Where polar words are in [`POLAR`]: (their group, their class).
struct PolarIndex {
    words: HashMap<&'static str, (usize, usize)>,
    stems: HashMap<String, (usize, usize)>,
}

fn polar_index() -> &'static PolarIndex {
    static INDEX: OnceLock<PolarIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = PolarIndex {
            words: HashMap::new(),
            stems: HashMap::new(),
        };
        for (group, members) in POLAR.iter().enumerate() {
            for (class, words) in members.iter().enumerate() {
                for word in words.split('|') {
                    index.words.insert(word, (group, class));
                    index.stems.entry(stem(word)).or_insert((group, class));
                }
            }
        }
        index
    })
}

/// The polar class of a word: itself, or for a word long enough to be inflected ("added",
/// "installing"), its stem; a short word by its stem would be another ("they" is not "the").
fn polar_class(word: &str, stem: &str) -> Option<(usize, usize)> {
    let index = polar_index();
    let by_stem = || (word.len() >= 5).then(|| index.stems.get(stem)).flatten();
    index.words.get(word).or_else(by_stem).copied()
}

impl Gist {
    pub fn of(text: &str) -> Self {
        let mut gist = Gist {
            numbers: Vec::new(),
            negations: 0,
            polar: BTreeSet::new(),
            names: BTreeSet::new(),
            words: Vec::new(),
            roles: BTreeSet::new(),
        };
        let mut marker: Option<&'static str> = None;
        for (position, token) in tokens(text).into_iter().enumerate() {
            if is_name(&token, position) {
                gist.names.insert(stem(&token.to_lowercase()));
            }
            let lower = token.to_lowercase();
            let mut after_digits = false;
            for part in split_digits(&lower) {
                let digits = part.starts_with(|c: char| c.is_ascii_digit());
                let ordinal = after_digits && ORDINAL_SUFFIXES.contains(&part);
                after_digits = digits;
                if digits {
                    gist.numbers.push(part.trim_start_matches('0').to_owned());
                    continue;
                }
                if ordinal {
                    continue;
                }
                if let Some((_, digits)) = NUMBER_WORDS.iter().find(|(w, _)| *w == part) {
                    gist.numbers.push((*digits).to_owned());
                    continue;
                }
                if NEGATIONS.contains(&part) {
                    gist.negations += 1;
                    continue;
                }
                let stem = stem(part);
                if let Some(class) = polar_class(part, &stem) {
                    gist.polar.insert(class);
                }
                if let Some(found) = ROLE_MARKERS.iter().find(|m| **m == part) {
                    marker = Some(found);
                    continue;
                }
                if STOPWORDS.contains(&part) {
                    continue;
                }
                if let Some(marker) = marker.take() {
                    gist.roles.insert((marker, stem.clone()));
                }
                gist.words.push(stem);
            }
        }
        gist
    }

    /// Whether an answer to one could answer the other, as far as the words tell.
    pub fn agrees_with(&self, other: &Gist) -> Result<(), Disagreement> {
        if self.numbers != other.numbers {
            return Err(Disagreement::Numbers);
        }
        let contained = subset(&self.words, &other.words) || subset(&other.words, &self.words);
        if self.negations != other.negations && contained {
            return Err(Disagreement::Negation);
        }
        if !same_polar_classes(&self.polar, &other.polar)
            || negated_form(&self.words, &other.words)
            || negated_form(&other.words, &self.words)
        {
            return Err(Disagreement::Polarity);
        }
        if self.swaps_names_with(other) {
            return Err(Disagreement::Names);
        }
        if self.swaps_roles_with(other) || other.swaps_roles_with(self) || permuted(self, other) {
            return Err(Disagreement::Roles);
        }
        if one_word_exchanged(&self.words, &other.words) {
            return Err(Disagreement::Substitution);
        }
        Ok(())
    }

    /// Whether each has a name the other does not use at all, as a name or a word.
    fn swaps_names_with(&self, other: &Gist) -> bool {
        let unused_by = |gist: &Gist, names: &BTreeSet<String>| {
            names
                .iter()
                .any(|name| !gist.names.contains(name) && !gist.words.contains(name))
        };
        unused_by(other, &self.names) && unused_by(self, &other.names)
    }

    /// Whether `other` puts after a role marker a word that this question uses, but not after
    /// that marker, where this question has the marker too.
    fn swaps_roles_with(&self, other: &Gist) -> bool {
        other.roles.iter().any(|(marker, word)| {
            let has_marker = self.roles.iter().any(|(m, _)| m == marker);
            has_marker
                && self.words.contains(word)
                && !self.roles.contains(&(*marker, word.clone()))
        })
    }
}

/// The same content words in another order: "can interns supervise contractors" and "can
/// contractors supervise interns".
fn permuted(a: &Gist, b: &Gist) -> bool {
    let (mut x, mut y) = (a.words.clone(), b.words.clone());
    x.sort();
    y.sort();
    x == y && a.words != b.words
}

fn subset(small: &[String], large: &[String]) -> bool {
    small.iter().all(|w| large.contains(w))
}

/// Whether, in every group of polar words that both use, they use the same classes.
fn same_polar_classes(a: &BTreeSet<(usize, usize)>, b: &BTreeSet<(usize, usize)>) -> bool {
    let classes = |set: &BTreeSet<(usize, usize)>, group: usize| -> Vec<usize> {
        set.iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, c)| *c)
            .collect()
    };
    let groups: BTreeSet<usize> = a.iter().map(|(g, _)| *g).collect();
    groups.into_iter().all(|group| {
        let (mine, theirs) = (classes(a, group), classes(b, group));
        theirs.is_empty() || mine == theirs
    })
}

/// Exactly one content word of each is missing from the other, and they share at least two:
/// one word exchanged for another in the same request.
fn one_word_exchanged(a: &[String], b: &[String]) -> bool {
    let a_only: BTreeSet<&String> = a.iter().filter(|w| !b.contains(w)).collect();
    let b_only: BTreeSet<&String> = b.iter().filter(|w| !a.contains(w)).collect();
    let shared: BTreeSet<&String> = a.iter().filter(|w| b.contains(w)).collect();
    a_only.len() == 1 && b_only.len() == 1 && shared.len() >= 2
}

/// The words of a text, apostrophes dropped ("don't" is "dont"), split at anything else that
/// is neither a letter nor a digit; a decimal point between digits stays ("3.5").
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().filter(|c| !matches!(c, '\'' | '’')).collect();
    let mut tokens = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let decimal_point = c == '.'
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || decimal_point {
            current.push(c);
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// A word written as a name: capitals past its first letter ("iPhone", "VPN", "SharePoint"), or
/// a capital first letter anywhere but at the start of the text.
fn is_name(token: &str, position: usize) -> bool {
    let mut letters = token.chars().filter(|c| c.is_alphabetic());
    let Some(first) = letters.next() else {
        return false;
    };
    let capital_inside = letters.any(char::is_uppercase);
    let single_letter = token.chars().filter(|c| c.is_alphabetic()).count() == 1;
    // "I" is no name.
    capital_inside || (first.is_uppercase() && position > 0 && !single_letter)
}

/// A token's runs of digits and of other characters: "q3" is "q" and "3", "win11" is "win" and
/// "11", "3.5gb" is "3.5" and "gb".
fn split_digits(token: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut digits = None;
    for (i, c) in token.char_indices() {
        let is_digit = c.is_ascii_digit() || (c == '.' && digits == Some(true));
        if digits.is_some_and(|d| d != is_digit) {
            parts.push(&token[start..i]);
            start = i;
        }
        digits = Some(is_digit);
    }
    if start < token.len() {
        parts.push(&token[start..]);
    }
    parts
}

/// A crude stem: the common inflections and derivations off ("installing", "installed",
/// "installation" are "instal"), so that a word and its forms agree.
fn stem(word: &str) -> String {
    const SUFFIXES: &[&str] = &[
        "ations", "ation", "ments", "ment", "ings", "ing", "ied", "ies", "ed", "es", "ly", "er",
        "s", "e", "y",
    ];
    let mut word = word.to_owned();
    for suffix in SUFFIXES {
        if word.len() > suffix.len() + 2 && word.ends_with(suffix) {
            word.truncate(word.len() - suffix.len());
            if *suffix == "ies" || *suffix == "ied" {
                word.push('i');
            }
            break;
        }
    }
    // "install" and "instal", "cancelled" and "cancel"; not "add".
    if word.len() > 4 && word.as_bytes()[word.len() - 1] == word.as_bytes()[word.len() - 2] {
        word.pop();
    }
    word
}

/// Whether `b` holds a negated form of a word of `a` that `a` itself does not hold ("paid" and
/// "unpaid").
fn negated_form(a: &[String], b: &[String]) -> bool {
    const PREFIXES: &[&str] = &["un", "dis", "non", "in", "im", "ir", "il", "de", "mis"];
    b.iter().filter(|w| !a.contains(w)).any(|negated| {
        PREFIXES.iter().any(|prefix| {
            negated
                .strip_prefix(prefix)
                .is_some_and(|word| word.len() > 2 && a.iter().any(|w| w == word))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(a: &str, b: &str) -> Result<(), Disagreement> {
        Gist::of(a).agrees_with(&Gist::of(b))
    }

    #[test]
    fn a_question_agrees_with_itself() {
        for text in [
            "how do I open a ticket with IT",
            "request 500GB on the FY24 drive",
            "",
        ] {
            assert_eq!(agree(text, text), Ok(()));
        }
    }

    #[test]
    fn paraphrases_agree() {
        assert_eq!(
            agree(
                "How do I reset my VPN password?",
                "how do i reset my VPN password"
            ),
            Ok(())
        );
        assert_eq!(
            agree(
                "Can you help me install Zoom?",
                "installing Zoom, help please"
            ),
            Ok(())
        );
        assert_eq!(agree("I need 5 days off", "I need five days off"), Ok(()));
    }

    #[test]
    fn near_misses_disagree_for_their_reason() {
        use Disagreement::*;
        assert_eq!(
            agree("enable 2FA on my account", "disable 2FA on my account"),
            Err(Polarity)
        );
        assert_eq!(agree("turn on 2FA", "turn off 2FA"), Err(Polarity));
        assert_eq!(
            agree("Can I expense a taxi?", "Can't I expense a taxi?"),
            Err(Negation)
        );
        assert_eq!(agree("5 days of leave", "10 days of leave"), Err(Numbers));
        assert_eq!(
            agree("Q3 revenue report", "Q4 revenue report"),
            Err(Numbers)
        );
        assert_eq!(
            agree("upgrade to Windows 11", "upgrade to Windows 10"),
            Err(Numbers)
        );
        assert_eq!(
            agree("wifi in the Berlin office", "wifi in the Munich office"),
            Err(Names)
        );
        assert_eq!(
            agree(
                "move money from savings to checking",
                "move money from checking to savings"
            ),
            Err(Roles)
        );
        assert_eq!(agree("install Zoom", "uninstall Zoom"), Err(Polarity));
        assert_eq!(
            agree("paid leave for carers", "unpaid leave for carers"),
            Err(Polarity)
        );
        assert_eq!(
            agree(
                "copy from sheet 1 to sheet 2",
                "copy from sheet 2 to sheet 1"
            ),
            Err(Numbers)
        );
    }

    #[test]
    fn tokens_keep_decimals_and_split_digits_from_letters() {
        assert_eq!(tokens("v3.5 isn't 3.5GB."), ["v3.5", "isnt", "3.5GB"]);
        assert_eq!(split_digits("v3.5"), ["v", "3.5"]);
        assert_eq!(split_digits("win11pro"), ["win", "11", "pro"]);
        assert_eq!(stem("installation"), "instal");
        assert_eq!(stem("installing"), "instal");
        assert_eq!(stem("installed"), "instal");
    }
}
