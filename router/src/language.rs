//! The language of a user's message: small local models answer English well and other languages
//! poorly, so the policy can escalate the languages its local model does not serve.
//!
//! lingua, with the languages most common in enterprise traffic compiled in. (whatlang was tried
//! first and read plain English help-desk questions as Afrikaans or Norwegian.)

use std::sync::LazyLock;

use lingua::{Language as Lingua, LanguageDetector, LanguageDetectorBuilder};

/// A detected language.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Language {
    /// ISO 639-1 (`en`, `de`, `fr`, …).
    pub code: &'static str,
    /// lingua's confidence in [0, 1].
    pub confidence: f64,
}

const LANGUAGES: [Lingua; 13] = [
    Lingua::English,
    Lingua::German,
    Lingua::French,
    Lingua::Spanish,
    Lingua::Italian,
    Lingua::Portuguese,
    Lingua::Dutch,
    Lingua::Polish,
    Lingua::Russian,
    Lingua::Chinese,
    Lingua::Japanese,
    Lingua::Korean,
    Lingua::Arabic,
];

/// Below this confidence the text says too little (a word, a code snippet) to be told.
const MIN_CONFIDENCE: f64 = 0.6;

/// The characters read from the start of a message. The language shows in the first sentence or
/// two, while lingua's cost grows with the text: each character n-gram is looked up in every
/// candidate language's model, and the models are too large to stay in cache next to the
/// embedder (300 characters took 0.7 ms right after an embedding), and a 5 MB message must not
/// take seconds.
const MAX_CHARS: usize = 160;

static DETECTOR: LazyLock<LanguageDetector> =
    LazyLock::new(|| LanguageDetectorBuilder::from_languages(&LANGUAGES).build());

/// The language of `text`, when it can be told with some confidence.
pub fn detect(text: &str) -> Option<Language> {
    let text = text
        .char_indices()
        .nth(MAX_CHARS)
        .map_or(text, |(cut, _)| &text[..cut]);
    if text.chars().filter(|c| c.is_alphabetic()).count() < 3 {
        return None;
    }
    let (language, confidence) = DETECTOR
        .compute_language_confidence_values(text)
        .into_iter()
        .next()?;
    (confidence >= MIN_CONFIDENCE).then(|| Language {
        code: code(language),
        confidence,
    })
}

fn code(language: Lingua) -> &'static str {
    match language {
        Lingua::English => "en",
        Lingua::German => "de",
        Lingua::French => "fr",
        Lingua::Spanish => "es",
        Lingua::Italian => "it",
        Lingua::Portuguese => "pt",
        Lingua::Dutch => "nl",
        Lingua::Polish => "pl",
        Lingua::Russian => "ru",
        Lingua::Chinese => "zh",
        Lingua::Japanese => "ja",
        Lingua::Korean => "ko",
        _ => "ar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_desk_questions_are_told_apart() {
        let cases = [
            (
                "How do I reset my VPN password? It stopped working this morning.",
                "en",
            ),
            (
                "My laptop won't connect to the office wifi since this morning.",
                "en",
            ),
            (
                "Wie setze ich mein VPN-Passwort zurück? Es geht seit heute Morgen nicht mehr.",
                "de",
            ),
            (
                "Comment réinitialiser mon mot de passe VPN ? Il ne marche plus depuis ce matin.",
                "fr",
            ),
            (
                "¿Cómo restablezco mi contraseña de la VPN? Dejó de funcionar esta mañana.",
                "es",
            ),
            (
                "Come posso reimpostare la password della VPN? Non funziona da stamattina.",
                "it",
            ),
            (
                "Hoe reset ik mijn VPN-wachtwoord? Het werkt sinds vanochtend niet meer.",
                "nl",
            ),
            (
                "Как сбросить пароль VPN? Он не работает с сегодняшнего утра.",
                "ru",
            ),
            ("如何重置我的VPN密码？今天早上它停止工作了。", "zh"),
            (
                "VPNのパスワードをリセットするにはどうすればいいですか？",
                "ja",
            ),
        ];
        for (text, code) in cases {
            assert_eq!(detect(text).map(|l| l.code), Some(code), "{text}");
        }
    }

    #[test]
    fn a_long_message_is_told_by_its_opening() {
        let german =
            "Wie setze ich mein VPN-Passwort zurück? Es geht seit heute Morgen nicht mehr. ";
        let long = german.repeat(100_000);
        assert_eq!(detect(&long).map(|l| l.code), Some("de"));
    }

    #[test]
    fn too_little_text_is_not_guessed() {
        assert_eq!(detect(""), None);
        assert_eq!(detect("ok"), None);
        assert_eq!(detect("1234 5678"), None);
    }
}
