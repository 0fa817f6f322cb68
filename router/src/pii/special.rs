//! Disclosures of the special categories of GDPR article 9 (health, disability, pregnancy,
//! religion, trade union membership, sexual orientation, ethnicity, political opinion) and of
//! criminal records (article 10), about the writer or someone identifiable. A question about a
//! condition in general ("what are the symptoms of flu?") is not one: each pattern needs a person
//! it is about (`I`, `my`, `she is`, `diagnosed with`) next to the category's words.

use super::{Pattern, PiiKind, Scan, regex};

/// Conditions and treatments, in English, French, German and Spanish.
const CONDITIONS: &str = concat!(
    r"cancer|breast cancer|tumou?r|leuka?emia|lymphoma|diabetes|type [12] diabetes|epilepsy|",
    r"multiple sclerosis|parkinson'?s|alzheimer'?s|dementia|depression|anxiety|",
    r"an anxiety disorder|panic attacks|burn-?out|ptsd|bipolar(?: disorder)?|schizophrenia|",
    r"adhd|autism|dyslexia|hiv|hepatitis|long covid|covid|asthma|arthritis|crohn'?s|",
    r"ibs|migraines?|a heart attack|heart disease|a stroke|endometriosis|fibromyalgia|",
    r"chemo(?:therapy)?|radiotherapy|dialysis|an? (?:\w+ )?surgery|",
    r"a miscarriage|ivf|fertility treatment|a disability|disabilities|an eating disorder|",
    r"anorexia|bulimia|ocd|insomnia|a mental health condition|mental health issues|",
    r"alcoholism|an addiction|addiction|a brain injury|a slipped disc|a herniated disc|",
    r"tinnitus|hearing loss|sleep apnea|lupus|celiac disease|coeliac disease|a chronic illness|",
    r"herniated disc|slipped disc|migraines?|a bad migraine|norovirus|chickenpox|shingles|",
    r"post-?partum depression|alcohol addiction|parkinson's|a concussion|",
    r"a chronic condition|covid-19|pneumonia|tuberculosis|glaucoma|",
    r"krebs|brustkrebs|diabetes|epilepsie|depressionen|eine depression|burnout|",
    r"eine behinderung|schwerbehinderung|chemotherapie|",
    r"cancer du sein|un cancer|le diabète|une dépression|un burn-?out|un handicap|",
    r"une chimiothérapie|une fausse couche|",
    r"cáncer|diabetes|depresión|ansiedad|una discapacidad|quimioterapia|un aborto"
);

static DISCLOSURE: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"(?i)\b(?:",
            // Diagnosed with anything; suffering from, living with, treated for a condition.
            r"(?:diagnosed with|diagnostiquée? (?:avec|d'une?|de)|diagnosticad[oa] (?:con|de)|",
            r"diagnostiziert mit|diagnose:)\s+[^.,;!?\n]{{3,40}}",
            r"|(?:suffer(?:s|ing)? from|living with|lives with|battling|recovering from|",
            r"undergoing|being treated for|treated for|in remission from|has|have|had|got|",
            r"with|habe|hat|leide an|leidet an|leide unter|erkrankt an|souffre d[e']|",
            r"atteinte? d[e']|j'ai|il a|elle a|padece|padezco|tengo|tiene|sufre de|sufro de)",
            r"\s+(?:{conditions})\b",
            // Pregnancy, disability and the other states of a person.
            r"|(?:i'm|i am|i was|i've been|she's|she is|she was|he's|he is|he was|",
            r"wife is|partner is|je suis|elle est|il est|ich bin|sie ist|er ist|",
            r"estoy|soy|está|es)\s+(?:now |currently |\d+ (?:weeks|months) |",
            r"registered |severely |partially |visually |hearing |legally )?(?:",
            r"pregnant|expecting(?: a baby)?|disabled|deaf|blind|impaired|(?:type [12] )?diabetic|epileptic|coeliac|celiac|",
            r"autistic|dyslexic|dyscalculic|prediabetic|hiv[- ]positive|gay|lesbian|bisexual|queer|transgender|trans|",
            r"non-binary|muslim|jewish|christian|catholic|protestant|hindu|sikh|buddhist|",
            r"mormon|atheist|a union member|in the union|a member of the union|",
            r"on chemo|in rehab|in therapy|in a wheelchair|a wheelchair user|on sick leave|",
            r"enceinte|handicapée?|musulmane?|juive?|catholique|syndiquée?|",
            r"schwanger|schwerbehindert|behindert|muslimisch|jüdisch|gewerkschaftsmitglied|",
            r"embarazada|discapacitad[oa]|musulmán|musulmana|judí[oa]|católic[oa]|sindicad[oa])\b",
            // My own condition, treatment, faith or union.
            r"|(?:my|his|her|mon|ma|mein|meine|meiner|seine|ihre|mi|su)\s+(?:",
            r"pregnancy|diagnosis|disability|chemo(?:therapy)?|surgery|cancer|",
            r"diabetes|depression|anxiety|therapist|psychiatrist|oncologist|treatment|condition|",
            r"illness|religion|faith|church|mosque|synagogue|temple|union|sexuality|headscarf|hijab|",
            r"turban|kippah|(?:{conditions})|",
            r"grossesse|handicap|maladie|religion|syndicat|",
            r"schwangerschaft|behinderung|erkrankung|krankheit|diagnose|gewerkschaft|",
            r"embarazo|discapacidad|enfermedad|diagnóstico|religión|sindicato)\b",
            // Union membership and religious observance.
            r"|union member(?:ship)?|member of (?:the |a )?(?:[\w.]+ )?union|joined the union|",
            r"(?:ig metall|ver\.di|unite|unison|gmb) member|member of (?:the )?(?:fsu|fnv|cgt|cfdt|ccoo|ugt|",
            r"unite|unison|gmb|teamsters|sindicato)\b|(?:are|is|'re|'s) expecting\b|allergic to \w+|",
            r"for religious reasons|insulin pump|(?:criminal |dui |drug )?convictions? for|dui conviction|",
            r"(?:sick|off|leave|absence|absent|signed off|fit note|sick note|krank|arrêt|baja)[^.\n]{{0,40}}?",
            r"\b(?:{conditions})\b|",
            r"member of (?:ig metall|ver\.di)|chemo\b|(?:uses|in) a wheelchair|",
            r"\d+ weeks pregnant|(?:is|are|got|'m|'s) pregnant|partially sighted|visually impaired|hard of hearing|",
            r"(?:knee|back|hip|heart|eye|shoulder|spine|bypass|cataract) surgery|",
            r"(?:sick leave|off sick|krankgeschrieben|arrêt maladie|de baja)\s+(?:for|because of|due to|wegen|pour|por)\s+(?:{conditions})\b|",
            r"schwerbehinderung|gdb \d+|bandscheibenvorfall|",
            r"(?:he|she|i) (?:is|am|'m) (?:black|asian|roma|arab|latino|latina|hispanic)\b|",
            r"délégué(?:e)? syndical(?:e)?|afiliad[oa] (?:a|al) (?:sindicato|ccoo|ugt)|",
            r"fasting for ramadan|during ramadan|for eid|for yom kippur|for diwali|",
            r"observe (?:the )?sabbath|observe shabbat|friday prayers?|",
            // Criminal records.
            r"criminal record|was convicted|a conviction for|served time|was arrested|",
            r"vorstrafe|casier judiciaire|antecedentes penales",
            r")"
        ),
        conditions = CONDITIONS
    ))
});

pub(super) fn find(scan: &mut Scan) {
    for found in DISCLOSURE.find_iter(scan.text) {
        scan.add(PiiKind::SpecialCategory, found.range());
    }
}
