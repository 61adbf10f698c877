"""Formulas rendered at export, so that feedback and formgrader pages need no MathJax.

nbconvert's HTML templates (and nbgrader's feedback and formgrade templates built on them)
typeset ``$...$`` in the browser with MathJax from a CDN: on an offline grading server, or
in a feedback file opened without a network, every formula stays raw ``$...$``. This
preprocessor turns the math of markdown cells into MathML (latex2mathml), which browsers
render natively. Code spans and fenced code are left alone; a formula latex2mathml cannot
convert stays as it was.
"""

from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor

# fenced code, inline code spans, then math: $$..$$, \[..\], \(..\), $..$ (not \$, not "$5 and $6"),
# none of them across a blank line (a paragraph): what MathJax pairs in a rendered notebook
_NOT_PARAGRAPH = r"(?:(?!\n[ \t]*\n)[^$])"
_TOKENS = re.compile(
    r"(?P<fence>^(?P<ticks>`{3,}|~{3,}).*?^(?P=ticks)[ \t]*$)"
    r"|(?P<code>(?P<bt>`+)(?:(?!\n[ \t]*\n).)+?(?P=bt))"
    rf"|(?P<display>\$\$(?P<d1>{_NOT_PARAGRAPH}+?)\$\$|\\\[(?P<d2>(?:(?!\n[ \t]*\n).)+?)\\\])"
    rf"|(?P<inline>\\\((?P<i1>(?:(?!\n[ \t]*\n).)+?)\\\)|(?<![\\$])\$(?P<i2>[^\s$](?:{_NOT_PARAGRAPH}*?[^\\$])?)\$(?!\d))",
    re.DOTALL | re.MULTILINE,
)
_ALIGNED = re.compile(r"\\begin\{aligned\}(?P<body>.*?)\\end\{aligned\}", re.DOTALL)


def _aligned_as_array(latex: str) -> str:
    """``aligned`` (which latex2mathml flattens, '&' and all) as an ``array`` of right/left
    aligned columns, which it lays out as a table."""
    def replace(match: re.Match) -> str:
        body = match.group("body")
        columns = 1 + max(row.count("&") for row in body.split("\\\\"))
        return "\\begin{array}{" + ("rl" * columns)[:columns] + "}" + body + "\\end{array}"

    return _ALIGNED.sub(replace, latex)


def latex_to_mathml(latex: str, display: bool = False) -> str | None:
    """MathML for one formula, or None where latex2mathml cannot convert it to well-formed
    MathML (the TeX then stays for the reader)."""
    from xml.etree import ElementTree

    from latex2mathml.converter import convert

    try:
        mathml = convert(_aligned_as_array(latex.strip()), display="block" if display else "inline")
        ElementTree.fromstring(mathml)  # e.g. \text{x<y} comes back as raw markup: not ours to emit
    except Exception:  # latex2mathml and the XML parser raise assorted errors on what they cannot read
        return None
    return mathml


def render_math(markdown: str) -> str:
    """``markdown`` with each formula replaced by its MathML (code left as it is)."""

    def replace(match: re.Match) -> str:
        if match.group("fence") or match.group("code"):
            return match.group(0)
        display = match.group("display") is not None
        latex = next(g for g in (match.group("d1"), match.group("d2"), match.group("i1"), match.group("i2"))
                     if g is not None)
        mathml = latex_to_mathml(latex, display)
        if mathml is None:
            return match.group(0)
        # markdown would read the MathML's line breaks and '*' / '_' as its own syntax
        return mathml.replace("\n", " ")

    return _TOKENS.sub(replace, markdown)


def _has_math(text: str) -> bool:
    return "$" in text or "\\(" in text or "\\[" in text


class RenderMathAsMathML(Preprocessor):
    """Math as MathML for HTML export: in markdown cells (student answers included) and in
    ``text/latex`` outputs (SymPy's), which nbconvert prefers to the plain text."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown" and _has_math(cell.source):
            cell.source = render_math(cell.source)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            latex = data.get("text/latex")
            if isinstance(latex, list):
                latex = "".join(latex)
            if latex and "text/html" not in data and _has_math(latex):
                rendered = render_math(latex.strip())
                if rendered.startswith("<math") and rendered.endswith("</math>") and rendered.count("<math") == 1:
                    data["text/html"] = rendered  # one formula and nothing else (no text left unescaped)
        return cell, resources
