"""Formulas rendered as MathML at export (autograder/mathml.py), as feedback and formgrader
pages get them through the course's nbgrader config: no MathJax, no CDN."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbconvert import HTMLExporter
from traitlets.config.loader import PyFileConfigLoader

from autograder.course import ASSIGNMENTS, ROOT, solution_path
from autograder.mathml import RenderMathAsMathML, render_math


def test_inline_and_display_math_become_mathml_and_code_stays_as_written():
    text = ("Dice $2|A\\cap B|/(|A|+|B|)$ and\n\n$$\n\\mathrm{IoU} = \\frac{TP}{TP+FP+FN}\n$$\n\n"
            "`cost = $5` and\n```python\nx = '$y$'\n```\nand \\(a^2\\), \\[b\\].")
    out = render_math(text)
    assert out.count("<math") == 4
    assert out.count('display="block"') == 2  # $$...$$ and \\[...\\]
    assert "`cost = $5`" in out and "x = '$y$'" in out
    assert "\\frac" not in out and "$2|A" not in out


def test_dollars_that_are_not_math_are_left_alone():
    for text in ("It costs $5 and $6.", "an escaped \\$ sign", "no math at all"):
        assert render_math(text) == text


def test_tex_latex2mathml_cannot_convert_is_kept_for_a_reader():
    assert render_math("see $\\frac{1}{$ here") == "see $\\frac{1}{$ here"  # an unclosed brace


def test_sympy_latex_outputs_get_an_html_rendering():
    cell = nbformat.v4.new_code_cell("display(Math(...))", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/latex": "$\\displaystyle \\frac{J}{J+1}$", "text/plain": "<IPython.Math>"})])
    cell, _ = RenderMathAsMathML().preprocess_cell(cell, {}, 0)
    assert cell.outputs[0].data["text/html"].startswith("<math")


def test_aligned_equations_become_a_table_and_markup_in_text_is_not_emitted():
    out = render_math("$$\\begin{aligned} P_5 &= C_5 \\\\ P_4 &= C_4 + \\mathrm{up}(P_5) \\end{aligned}$$")
    assert out.count("<mtr>") == 2 and "<mi>&</mi>" not in out
    assert render_math("$\\text{x<y}$") == "$\\text{x<y}$"  # latex2mathml would put a raw tag in the page
    assert render_math("one $a\n\nb$ two") == "one $a\n\nb$ two"  # not across paragraphs


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_course_config_exports_every_solution_without_raw_math(assignment):
    config = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert RenderMathAsMathML in config.HTMLExporter.preprocessors
    nb = nbformat.read(solution_path(assignment), as_version=4)
    body, _ = HTMLExporter(config=config).from_notebook_node(nb)
    prose = re.sub(r"<(script|pre|code)\b.*?</\1>", "", body, flags=re.S)
    assert body.count("<math") > 10
    assert not re.search(r"\$[^$<>]{1,80}\$", prose), "a formula left for MathJax"
    assert "<mi>&</mi>" not in body
