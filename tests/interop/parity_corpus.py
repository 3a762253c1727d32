"""Texts on which every tokenizer import must give the reference's ids: the places where
pre-tokenizers disagree (runs of spaces and tabs, newlines followed by spaces and digits, numbers
of every length, code, URLs, contractions, CJK, emoji, combining marks, a leading space, verse
lines that start with "\\n  8")."""

VERSE = ("\n  8 And God called the firmament Heaven. And the evening and the morning were the "
         "second day.\n  9 And God said, Let the waters under the heaven be gathered together "
         "unto one place, and let the dry land appear: and it was so.\n  10 And God called the "
         "dry land Earth;")

CORPUS = [
    "Hello world",
    " leading space", "  two leading spaces", "trailing spaces   ", "\tTab\tseparated\t\tcells",
    "a  b   c    d     e", "line one\nline two\n\nline four\n", "\r\nwindows\r\nline ends",
    "\n  8 And God said", "\n 12 verse\n  123 verse", VERSE,
    "1 12 123 1234 12345 123456 1234567 12345678 3.14159 -42 1,000,000 0x1F 2024-01-31",
    "def f(x):\n    return x ** 2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] >> 2; }  // C++",
    "https://example.com/path?q=1&r=two#frag and mailto:someone@example.org",
    "I'm sure you've seen it; they'll say we'd've won. DON'T SHOUT, It'S OK",
    "日本語のテキストです。中文文本，한국어 텍스트",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "combining: e\u0301 a\u0308 n\u0303 — café naïve Ångström",
    "Ünïcödé and ÀÉÎÕÜ ß ﬁ ligature",
    "punctuation!!! ??? ... --- ***  $100 + 5% = <tag> | ^ ~ `code`",
    "CamelCaseWord snake_case_word kebab-case-word UPPERCASE",
    "   ", "\n\n\n", "x",
]
"""The parity texts (short: each test encodes every text with every tokenizer)."""
