"""LaTeX spellings of table text: special characters escaped, ±, — and the footnote marks typeset."""

from __future__ import annotations

from .footnotes import CHANCE_MARK, OVER_BUDGET_MARK

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}
_TYPESET = {"±": r"$\pm$", "—": "--", "–": "--", CHANCE_MARK: r"$^\dagger$", OVER_BUDGET_MARK: r"$^\ddagger$"}


def escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped (a label or a header)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def typeset(text: str) -> str:
    """`text` escaped, with ±, dashes and the footnote marks in LaTeX (a cell or a footnote)."""
    return "".join(_TYPESET.get(ch, _SPECIAL.get(ch, ch)) for ch in text)


def footnote_lines(footnotes: list[str]) -> list[str]:
    """Footnotes as small paragraphs to set under a tabular."""
    return [rf"{{\footnotesize {typeset(line)}}}\par" for line in footnotes]
