"""Language codes: users speak ISO 639-1 ("de"); SIB-200/FLORES speaks "deu_Latn"."""

# The 32 SIB-200 languages of ../shared/data/sib200, by their usual two-letter code.
ISO_TO_FLORES: dict[str, str] = {
    "am": "amh_Ethi", "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "fi": "fin_Latn", "fr": "fra_Latn",
    "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "id": "ind_Latn", "ig": "ibo_Latn",
    "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "nl": "nld_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "ru": "rus_Cyrl", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "th": "tha_Thai", "tr": "tur_Latn", "ur": "urd_Arab", "vi": "vie_Latn", "yo": "yor_Latn",
    "zh": "zho_Hans", "zu": "zul_Latn",
}
FLORES_TO_ISO = {v: k for k, v in ISO_TO_FLORES.items()}


def parse_lang_list(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """"de,fr, es" -> ["de", "fr", "es"]; keeps order, drops blanks and repeats."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip()
        if item:
            seen.setdefault(item, None)
    return list(seen)
