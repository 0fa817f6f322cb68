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
    r"cáncer|diabetes|depresión|ansiedad|una discapacidad|quimioterapia|un aborto|",
    // Common illnesses a sick note names, chronic and neurological conditions, in four languages.
    r"(?:the |a )?flu|influenza|bronchitis|a (?:bad |heavy |nasty )?cold|gastroenteritis|a stomach bug|",
    r"mononucleosis|tonsillitis|strep throat|sinusitis|appendicitis|gallstones|",
    r"kidney stones|a hernia|sciatica|gout|hypertension|high blood pressure|angina|",
    r"(?:a |an )?(?:heart )?arrhythmia|atrial fibrillation|afib|heart failure|",
    r"relapsing(?:-remitting)? ms|lyme disease|a sleep disorder|chronic fatigue(?: syndrome)?|me/cfs|",
    r"psoriasis|eczema|anaemia|anemia|sickle cell(?: disease)?|cystic fibrosis|haemophilia|",
    r"hypothyroidism|hyperthyroidism|hashimoto'?s|graves'? disease|thyroid cancer|",
    r"melanoma|skin cancer|prostate cancer|lung cancer|colon cancer|",
    r"an? (?:benign |malignant )?(?:breast )?lump|breast lump|a brain tumou?r|sleep disorder|heart condition|",
    r"macular degeneration|cataracts?|sleep apnoea|obstructive sleep apnoea|",
    r"tourette'?s|dyspraxia|a stammer|a stutter|neurodivergen(?:ce|t)|",
    r"alcohol(?:ism| dependence| use disorder)|substance abuse|a gambling addiction|",
    r"gestational diabetes|pre-?eclampsia|hyperemesis|postnatal depression|a stillbirth|",
    r"infertility|pcos|menopause|long-?covid|post-?covid|",
    r"a broken (?:leg|arm|wrist|ankle|foot|hand|hip|collarbone|rib|nose)|broken ribs|",
    r"whiplash|tendonitis|tendinitis|carpal tunnel(?: syndrome)?|rsi|chronic (?:back )?pain|",
    r"back problems|a bad back|dementia|advanced dementia|late-stage \w+|",
    r"la grippe|une grippe|une bronchite|une angine|une gastro(?:-entérite)?|",
    r"une mononucléose|une sclérose en plaques|une hernie discale|une lombalgie|",
    r"une fracture|une entorse|une maladie chronique|",
    r"grippe|eine grippe|eine bronchitis|eine erkältung|migräne|tinnitus|",
    r"multiple sklerose|multipler sklerose|eine fehlgeburt|scharlach|windpocken|masern|keuchhusten|rückenschmerzen|eine lungenentzündung|",
    r"gripe|una gripe|bronquitis|migrañas?|esclerosis múltiple|una hernia discal|",
    r"una fractura|neumonía|a seizure|seizures|dengue(?: fever)?|malaria|typhoid|measles|mumps|",
    r"chickenpox|heart attack|a perforated eardrum|(?:stage [1-4] )?(?:chronic )?kidney disease|a hearing impairment|",
    r"a visual impairment|hearing impairment|cochlear implants?|reduced mobility|asthme|de l'asthme|du diabète|de l'hypertension|",
    r"einer depression|einer grippe|einer bronchitis|einer operation|einem bandscheibenvorfall|einem burn-?out"
);

/// Medicines and treatments whose mention discloses a condition: `I'm on sertraline`.
const MEDICINES: &str = concat!(
    r"sertraline|fluoxetine|citalopram|escitalopram|paroxetine|venlafaxine|duloxetine|",
    r"bupropion|mirtazapine|prozac|zoloft|lexapro|antidepressants?|ssris?|",
    r"lithium|quetiapine|olanzapine|aripiprazole|risperidone|",
    r"insulin|metformin|ozempic|semaglutide|methotrexate|humira|adalimumab|",
    r"ritalin|methylphenidate|adderall|vyvanse|elvanse|levothyroxine|warfarin|",
    r"blood thinners|beta[- ]blockers|propranolol|xanax|benzodiazepines|diazepam|",
    r"lorazepam|pregabalin|gabapentin|tramadol|methadone|suboxone|antiretrovirals|",
    r"chemo(?:therapy)?|radiotherapy|dialysis|immunotherapy|hormone therapy|hrt"
);

/// Parts of the body an injury or an operation names.
const BODY_PARTS: &str = concat!(
    r"leg|arm|wrist|ankle|foot|hand|finger|toe|hip|knee|shoulder|elbow|back|neck|spine|",
    r"collarbone|rib|ribs|nose|jaw|skull|acl|meniscus|achilles|cruciate ligament|",
    r"gallbladder|appendix|thyroid|tonsils|uterus|ovary|ovaries|prostate|kidney|heart|eye|eyes|",
    r"genou|hanche|épaule|cheville|poignet|dos|knie|hüfte|schulter|rücken|",
    r"rodilla|cadera|hombro|tobillo|muñeca|espalda"
);

static DISCLOSURE: Pattern = Pattern::new(|| {
    regex(&format!(
        concat!(
            r"(?i)\b(?:",
            // Diagnosed with anything; suffering from, living with, treated for a condition.
            r"(?:diagnosed with|diagnostiquée?(?: avec| d'une?| de| une?| un)?|diagnosticad[oa] (?:con|de)|",
            r"diagnostiziert mit|diagnose:)\s+[^.,;!?\n]{{3,40}}",
            r"|(?:suffer(?:s|ing)? from|living with|lives with|battling|recovering from|",
            r"undergoing|being treated for|treated for|in remission from|has|have|had|got|",
            r"with|habe|hat|leide an|leidet an|leide unter|erkrankt an|souffre d[e']|",
            r"atteinte? d[e']|j'ai|il a|elle a|padece|padezco|tengo|tiene|sufre de|sufro de)",
            r"\s+(?:{conditions})\b",
            // Pregnancy, disability and the other states of a person.
            r"|(?:i'm|i am|i was|i've been|she's|she is|she was|he's|he is|he was|",
            r"wife is|partner is|je suis|elle est|il est|ich bin|sie ist|er ist|",
            r"estoy|soy|está|es)\s+(?:an? )?(?:now |currently |\d+ (?:weeks|months) |",
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
            r"(?:sick|off sick|off work|off for|off with|leave|absence|absent|signed off|fit note|sick note|fmla|krank|arrêt|baja)\b[^.\n]{{0,60}}?",
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
            // Medicines: `I'm on sertraline 100 mg`, `my insulin prescription`.
            r"(?:i'm|i am|i've been|she's|he's|is|am|been|was|currently|started|starting) ",
            r"(?:on|taking|prescribed|started on)(?: a| an)?(?: [a-z]+)? (?:{medicines})\b(?: \d+ ?mg)?",
            r"|(?:my|his|her) (?:{medicines})(?: prescription| dose| dosage| treatment)?\b",
            // Injuries and operations: `broke two ribs`, `my ACL reconstruction`, `Knie-OP`.
            r"|(?:broke|fractured|sprained|tore|dislocated|injured|hurt) ",
            r"(?:my |his |her |a |two |three |both )(?:left |right )?(?:{body})\b",
            r"|broken (?:left |right )?(?:leg|arm|wrist|ankle|foot|hand|hip|collarbone|ribs?|nose|jaw)\b",
            // Anyone who has a condition, a few words on: `Karim has photosensitive epilepsy`.
            r"|(?:has|have|had|'ve got|has got)(?: an?| the| my| his| her)?(?: [a-z][a-z'-]+){{0,2}} (?:{conditions})\b",
            r"|(?:i'm|i am|is|está|estoy|est|ist|bin) (?:very |seriously |terminally |gravement |muy |schwer )?(?:ill|enferm[oa]|malade|krank)\b",
            r"|(?:as )?an? (?:gay|lesbian|bisexual|trans|transgender|queer|non-binary) (?:man|woman|person|employee|couple|guy)\b",
            r"|(?:dhuhr|zuhr|asr|maghrib|isha|fajr|jummah|jumu'ah|friday) prayers?",
            r"|organi[sz]ing (?:committee )?(?:for )?(?:the )?union(?: drive)?",
            r"|(?:have|has|with) (?-i:MS)(?:[,.;!)]| and\b| since\b| so\b)",
            r"|(?:my|his|her|mon|ma|mein|meine|mi|su) (?:[a-z-]+ )?(?:{body}) ",
            r"(?:surgery|operation|op|reconstruction|replacement|transplant|fracture|injury)\b",
            r"|(?:{body})[- ](?:surgery|operation|op|reconstruction|replacement)\b",
            r"|(?:surgery|an operation|an op) (?:on|for) (?:my|his|her) [a-z ]{{2,25}}",
            r"|(?:post-surgery|post-op|post-operative) (?:sick leave|recovery|leave)",
            r"|(?:surgery|operation|opération|operación) \((?:[a-z]+ ){{0,2}}(?:removal|repair|replacement)\)",
            r"|had (?:a |an |my |his |her )?(?:[a-z-]+ ){{0,2}}(?:lump|mole|cyst|tumou?r|polyps?|",
            r"gallbladder|appendix|tonsils|wisdom teeth|uterus|ovary|kidney|thyroid) removed",
            r"|(?:opération|opéré(?:e)?) (?:du|de la|des|de l') (?:{body})",
            r"|(?:knie|hüft|schulter|rücken|bandscheiben)-?op(?:eration)?\b",
            // Therapy, rehabilitation and recovery.
            r"|(?:in|started|starting|begun|begins) (?:an? )?(?:outpatient |inpatient )?(?:therapy|rehab|counselling|counseling)",
            r"(?: program(?:me)?)?(?: for [a-z]+)?",
            r"|in recovery from (?:alcohol|drugs?|opioids?|gambling|addiction|substance)[a-z ]{{0,25}}",
            r"|(?:aa|na) meetings|(?:been|stayed|is|am) sober",
            r"|(?:wegen|por) (?:einer |eines |einem |una |un )?(?:{conditions})\b",
            r"|(?:admitted|hospitali[sz]ed|ingresad[oa]|hospitalisée?)(?: to(?: the)? hospital)? (?:for|with|por|pour) (?:{conditions})\b",
            r"|(?:en terapia|en tratamiento|en thérapie|in therapie|in behandlung) (?:por|pour|wegen) [a-zé]+",
            r"|pray(?:s|ing)? (?:jummah|jumu'ah|salah|salat|namaz|five times a day)",
            r"|(?:practi[sc]ing|observant|devout) (?:muslim|jew|catholic|christian|hindu|sikh|buddhist|mormon|orthodox jew)",
            r"|(?:proud|openly) (?:gay|lesbian|trans|queer|bisexual)\b",
            r"|(?:having|getting|undergoing|receiving|in hospital for|started|starting) (?:weekly |daily )?(?:{medicines}|therapy|physiotherapy)(?: for [a-z ]{{3,30}})?",
            r"|doctor (?:says|said|confirmed|thinks) (?:it'?s )?(?:an? )?(?:[a-z-]+ )?(?:{conditions})\b",
            r"|(?:i am|i'm|i'll be|i will be|he is|she is) fasting|fasting for (?:ramadan|ramzan|ramazan)",
            r"|colou?r[- ]blind|(?:ccoo|ugt|cgt|cfdt|seiu|unite|unison|gmb|siptu|fórsa|forsa) member",
            r"|member of (?:the )?(?:solidarność|solidarnosc|fórsa|forsa|siptu|unite|unison|gmb|ccoo|ugt)\b",
            r"|(?:delegad[oa]|representante) sindical|card-carrying member of (?:the )?[\w-]+",
            r"|member of the [a-z ]{{2,30}} party\b",
            r"|was (?:tried|charged|prosecuted|indicted) for [a-z ]{{3,30}}",
            r"|(?:uses?|using) a (?:walker|cane|crutches|stick|rollator)",
            r"|seeing a (?:therapist|psychiatrist|psychologist|counsellor|counselor)|for therapy(?: sessions?)?",
            r"|(?:being|me being|him being|her being) (?:gay|lesbian|bisexual|trans|transgender|queer|jewish|muslim|black)\b",
            r"|same-sex (?:couple|partner|spouse|wife|husband|marriage|wedding)|(?:going on|starting|on) maternity leave",
            r"|(?:ver\.di|ig metall|gew|evg)-mitglied|signed (?:a |our )?union cards?|join(?:ed)? (?:the )?union",
            r"|gdb (?:von )?\d+",
            // Disability and pregnancy in more words.
            r"|legally blind|(?:uses?|used|using|in) a (?:power |electric |manual )?wheelchair|wheelchair user|(?:my|his|her|wears?|wearing) hearing aids?|",
            r"(?:'ve|have|has) (?:had )?a (?:ringing|buzzing) in (?:my|his|her) (?:left |right )?ears?|",
            r"\d+(?:st|nd|rd|th|\.)? ?(?:weeks?|woche|semaines?|semanas?) (?:pregnant|schwanger|enceinte|de embarazo)|",
            r"in der \d+\. woche schwanger|(?:gives|giving|gave) birth|(?:da|dará|dio) a luz|accouche|",
            r"(?:my|a|her|the) miscarriage|(?:i'm|i am|she's|she is|we're|baby is|baby's) due in (?:january|february|march|april|may|june|july|august|september|october|november|december)|",
            // Faith, union and origin in more words.
            r"devout (?:catholic|christian|muslim|jew|hindu|sikh|buddhist|orthodox|mormon|baptist)|",
            r"(?:an? )?(?:elder|deacon|pastor|imam|rabbi|member|volunteer) (?:at|of) (?:my|our|the|his|her) ",
            r"(?:[a-z]+ ){{0,2}}(?:church|mosque|synagogue|temple|gurdwara|parish|congregation)|",
            r"(?:doing|keeping|observing) the ramadan fast|ramadan fast|",
            r"(?:a )?union rep(?:resentative)? (?:with|for|of|at) [\w.-]+|shop steward|",
            r"member of (?:the )?(?:seiu|afscme|uaw|ibew|nea|aft|afl-cio|cwa|usw|unite here|ucu|pcs|rmt|",
            r"aslef|nuj|rcn|bma|unsa|snesup|ig bce|gew|evg|ccoo|fnv|cnv)\b(?: local \d+)?|",
            r"mitglied (?:der|bei|in der) (?:ig [a-z]+|ver\.di|gew|evg|[a-z]+gewerkschaft)|",
            r"adhérente? (?:à la|de la|du) (?:cgt|cfdt|fo|sud|unsa|fsu|snes)\w*|",
            r"(?:his|her|my|their) [a-zé]+(?:an|ese|ish|i|ic|ch) (?:origins?|descent|heritage|background)|",
            r"(?:his|her|my|their) (?:ethnicity|ethnic background|race|skin colou?r)|",
            // Criminal records.
            r"criminal record|was convicted|a conviction for|served time|was arrested|",
            r"(?:a |has a )?(?:dui|dwi) conviction|(?:a |has a )?(?:[a-z]+ )?conviction from \d{{4}}(?: for [a-z ]{{3,30}})?|",
            r"on probation|on parole|",
            r"vorstrafe|casier judiciaire|antecedentes penales",
            r")"
        ),
        conditions = CONDITIONS,
        medicines = MEDICINES,
        body = BODY_PARTS,
    ))
});

/// Membership of an organisation named by its acronym (`a member of the SBPV`), which is a
/// union's when a union is spoken of just after.
static ACRONYM_MEMBER: Pattern = Pattern::new(|| {
    regex(
        r"(?i:\b(?:member|membre|mitglied|miembro|afiliad[oa]) (?:of|de|der|du|del)? ?(?:the |la |le |el )?)[A-Z][A-Z.-]{2,7}\b",
    )
});
static UNION_WORD: Pattern = Pattern::new(|| {
    regex(
        r"(?i)\b(?:union|syndica\w*|gewerkschaft\w*|sindica\w*|shop steward|rep(?:resentative)?)\b",
    )
});

pub(super) fn find(scan: &mut Scan) {
    for found in DISCLOSURE.find_iter(scan.text) {
        scan.add(PiiKind::SpecialCategory, found.range());
    }
    for found in ACRONYM_MEMBER.find_iter(scan.text) {
        if UNION_WORD.is_match(scan.after(found.end(), 100)) {
            scan.add(PiiKind::SpecialCategory, found.range());
        }
    }
}
