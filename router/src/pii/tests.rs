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
fn numbers_in_logs_and_business_text_are_not_phones_or_ids() {
    for text in [
        "2026-11-03 14:22:07.123 ERROR [worker-3] pool exhausted after 30000 ms",
        "[2026-11-03T14:22:07Z] GET /api/v2/orders 503 1843ms",
        "Windows build 10.0.19045.3693 fails with 0x80070005 at line 4471",
        "PO-2026-00417 and INC0012345 for €1,249.00, ORA-01017 on retry",
        "order 55501870 shipped, invoice no. 2026 1103 44 paid",
        "the total is 1 250 000 units, up 12.5% since 03/11/2026",
        "Exception in thread main at com.acme.Billing.run(Billing.java:214)",
        "We discussed Marie Curie and Warren Buffett in the training",
        "Hi Anna, how do I reset my VPN token?",
        "Our client Siemens needs the report by Friday",
        "what are the symptoms of diabetes and how is it diagnosed?",
        "the account is disabled and the user has MS Teams installed",
        "we diagnosed the network issue with Wireshark",
        "we need to address 3 issues before the release",
    ] {
        assert_eq!(kinds(text), [], "{text}");
    }
}

#[test]
fn every_kind_has_its_own_name_and_placeholder() {
    for kind in PiiKind::ALL {
        assert_eq!(PiiKind::parse(kind.as_str()), Some(kind));
        assert_eq!(
            kind.placeholder(),
            format!("[{}]", kind.as_str().to_uppercase())
        );
    }
}

#[test]
fn phone_formats_are_found() {
    for phone in [
        "(415) 555-2671",
        "415-555-2671",
        "+1 415 555 2671",
        "+33 1 42 68 53 00",
        "555-0187",
        "06 12 34 56 78",
        "0151 23456789",
        "0049 30 1234567",
    ] {
        let text = format!("call {phone} today");
        assert_eq!(kinds(&text), [(PiiKind::Phone, phone)], "{phone}");
    }
}

#[test]
fn names_are_found_in_their_contexts() {
    for (text, name) in [
        (
            "please reset the token for Maria Keller asap",
            "Maria Keller",
        ),
        ("Mr Okafor asked about his pension", "Mr Okafor"),
        ("my colleague Priya needs access to the drive", "Priya"),
        ("ma collègue Inès Dubois est absente", "Inès Dubois"),
        ("can you check Tom's payslip for October?", "Tom"),
        (
            "send it to Jean-Pierre van der Berg please",
            "Jean-Pierre van der Berg",
        ),
        (
            "Can you fix the report?\n\nThanks,\nAnna Weber",
            "Anna Weber",
        ),
    ] {
        assert_eq!(kinds(text), [(PiiKind::Person, name)], "{text}");
    }
}

#[test]
fn identifiers_addresses_and_birth_dates_are_found() {
    for (text, kind, value) in [
        (
            "employee ID E-20417 cannot log in",
            PiiKind::PersonalId,
            "E-20417",
        ),
        (
            "Kundennummer 4471923 bitte prüfen",
            PiiKind::PersonalId,
            "4471923",
        ),
        (
            "passport number C01X00T47 expires soon",
            PiiKind::NationalId,
            "C01X00T47",
        ),
        (
            "my NI number is QQ 12 34 56 C",
            PiiKind::NationalId,
            "QQ 12 34 56 C",
        ),
        ("DNI 12345678Z", PiiKind::NationalId, "12345678Z"),
        (
            "born 14/03/1987 in Porto",
            PiiKind::DateOfBirth,
            "14/03/1987",
        ),
        (
            "geboren am 3. Mai 1979",
            PiiKind::DateOfBirth,
            "3. Mai 1979",
        ),
        (
            "ship it to 221B Baker Street, London",
            PiiKind::Address,
            "221B Baker Street, London",
        ),
        (
            "ich wohne Hauptstraße 12, 20095 Hamburg",
            PiiKind::Address,
            "Hauptstraße 12, 20095 Hamburg",
        ),
        (
            "envoyez-le au 12 rue de la Paix, 75002 Paris",
            PiiKind::Address,
            "12 rue de la Paix, 75002 Paris",
        ),
        (
            "office is in Austin, TX 78701",
            PiiKind::Address,
            "Austin, TX 78701",
        ),
        ("postcode CF10 3AT", PiiKind::Address, "CF10 3AT"),
        (
            "neu: Am Lindenhof 7, 45147 Essen",
            PiiKind::Address,
            "Am Lindenhof 7, 45147 Essen",
        ),
        (
            "Passeig de Gràcia 43, 08007 Barcelona",
            PiiKind::Address,
            "Passeig de Gràcia 43, 08007 Barcelona",
        ),
    ] {
        assert_eq!(kinds(text), [(kind, value)], "{text}");
    }
}

#[test]
fn special_category_disclosures_are_found_and_general_questions_are_not() {
    for (text, phrase) in [
        (
            "I was diagnosed with type 2 diabetes last month",
            "diagnosed with type 2 diabetes last month",
        ),
        ("I'm pregnant, how long is maternity leave?", "I'm pregnant"),
        ("my chemotherapy starts monday", "my chemotherapy"),
        (
            "I am a union member, can they see that?",
            "I am a union member",
        ),
    ] {
        assert_eq!(kinds(text), [(PiiKind::SpecialCategory, phrase)], "{text}");
    }
}

#[test]
fn secrets_of_several_providers_are_found() {
    let cases = [
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
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----";
    assert_eq!(
        kinds(&format!("the key file is:\n{key}\nwhat is wrong?")),
        [(PiiKind::Secret, key)]
    );
    assert_eq!(
        kinds("my password is Hunter2!x"),
        [(PiiKind::Secret, "Hunter2!x")]
    );
}

#[test]
fn redaction_replaces_each_finding() {
    let text = "Write to bob@corp.example, card 5555 5555 5555 4444, for Maria Keller.";
    assert_eq!(
        redact(text, &scan(text)),
        "Write to [EMAIL], card [PAYMENT_CARD], for [PERSON]."
    );
}

#[test]
fn findings_do_not_show_the_text_in_debug() {
    let findings = scan("ssn 123-45-6789");
    assert!(!format!("{findings:?}").contains("6789"));
}

#[test]
fn a_corrected_birth_date_is_one_too_and_a_later_date_is_not() {
    assert_eq!(
        kinds("my date of birth shows 03/11/1988 but it should be 11/03/1988"),
        [
            (PiiKind::DateOfBirth, "03/11/1988"),
            (PiiKind::DateOfBirth, "11/03/1988")
        ]
    );
    assert_eq!(
        kinds("my son was born 06/14/2009, how old will he be on 12/31/2026?"),
        [(PiiKind::DateOfBirth, "06/14/2009")]
    );
}

#[test]
fn disclosures_named_by_treatment_injury_faith_or_union_are_found() {
    for (text, phrase) in [
        (
            "I'm on sertraline 100 mg, can I take ibuprofen?",
            "I'm on sertraline 100 mg",
        ),
        (
            "our driver broke two ribs unloading a trailer",
            "broke two ribs",
        ),
        (
            "my colleague has photosensitive epilepsy",
            "has photosensitive epilepsy",
        ),
        ("She was a devout Catholic all her life", "devout Catholic"),
        (
            "I'm still a member of SEIU Local 503",
            "member of SEIU Local 503",
        ),
        ("Mein Sohn hat Scharlach, was nun?", "hat Scharlach"),
    ] {
        assert_eq!(kinds(text), [(PiiKind::SpecialCategory, phrase)], "{text}");
    }
    for text in [
        "what are the symptoms of lyme disease?",
        "p95 latency went from 120 ms to 300 ms after the deploy",
        "the release was pulled back and the old build broke backwards compatibility",
        "our office with 2 kids' corner: €8k lump sum for relocation",
        "we cut off the heating during a cold spell",
    ] {
        assert_eq!(kinds(text), [], "{text}");
    }
}

#[test]
fn credentials_in_code_and_passwords_a_few_words_on_are_secrets() {
    for (text, secret) in [
        (
            "DATABASE_URL: postgresql://app:Rp0rt!ng_2026@db:5432/app",
            "Rp0rt!ng_2026",
        ),
        (
            "headers = {'Authorization': 'Bearer tt_live_9fK2xQ7mLp4Rv8sW3nZc'}",
            "tt_live_9fK2xQ7mLp4Rv8sW3nZc",
        ),
        (
            "server.login('bot@corp.example', 'Tr0ut!Lake77')",
            "Tr0ut!Lake77",
        ),
        (
            "my password for the portal is Caramelo#2026 and it is rejected",
            "Caramelo#2026",
        ),
        ("BIND_PW = 'Xq7!mR2#pLz9vT'", "Xq7!mR2#pLz9vT"),
    ] {
        let found: Vec<_> = kinds(text)
            .into_iter()
            .filter(|(k, _)| *k == PiiKind::Secret)
            .collect();
        assert_eq!(found, [(PiiKind::Secret, secret)], "{text}");
    }
    assert_eq!(kinds("proxy_pass http://app:5000;"), []);
}

#[test]
fn a_national_id_a_few_words_after_its_label_is_found_and_a_year_is_not() {
    assert_eq!(
        kinds("the notary needs my passport details: G31847265, issued 2022"),
        [(PiiKind::NationalId, "G31847265")]
    );
    assert_eq!(kinds("my passport expires in 2027, renew now?"), []);
}

#[test]
fn names_with_titles_or_initials_are_found_and_a_city_is_not() {
    assert_eq!(
        kinds("my OM Sir Benj was impressed"),
        [(PiiKind::Person, "Sir Benj")]
    );
    assert_eq!(
        kinds("their contact is Dott.ssa Bianchi"),
        [(PiiKind::Person, "Dott.ssa Bianchi")]
    );
    assert_eq!(
        kinds("RM | NNM\nS. Keller | 42\nA. Haddad | 38"),
        [
            (PiiKind::Person, "S. Keller"),
            (PiiKind::Person, "A. Haddad")
        ]
    );
    assert_eq!(kinds("we pick Plan B. Then we ship"), []);
    assert_eq!(kinds("how far is Lugano from Milan by train?"), []);
    assert_eq!(
        kinds("who was Barbara McClintock and what did she find?"),
        []
    );
    assert_eq!(
        kinds("our print partner Hans-Peter Gruber called"),
        [(PiiKind::Person, "Hans-Peter Gruber")]
    );
}

#[test]
fn a_table_column_named_like_an_id_or_a_birth_date_holds_them() {
    let text = "overtime last month:\n\nemp no.\thours\tdob\nNH-10234\t12\t1987-11-04\nNH-10871\t4.5\t1990-02-01\n\ntotal?";
    let found = kinds(text);
    assert_eq!(
        found,
        [
            (PiiKind::PersonalId, "NH-10234"),
            (PiiKind::DateOfBirth, "1987-11-04"),
            (PiiKind::PersonalId, "NH-10871"),
            (PiiKind::DateOfBirth, "1990-02-01"),
        ]
    );
    // Figures under other headers are not.
    assert_eq!(kinds("line\tbudget\tactual\nagency\t812000\t947300"), []);
}

#[test]
fn treatments_wedding_and_fasting_disclose_a_special_category() {
    for text in [
        "He had a mild heart attack on Sunday and is admitted",
        "I'm having chemotherapy for breast cancer until March",
        "It's a same-sex wedding and I'm not out to my team",
        "Salam. I am fasting and want to finish my shift at 2pm",
        "I'm a CCOO member and our delegate asked HR for the list",
    ] {
        let found = kinds(text);
        assert!(
            found.iter().any(|(k, _)| *k == PiiKind::SpecialCategory),
            "{text}: {found:?}"
        );
    }
}
