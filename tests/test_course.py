"""Helpers that pin notebook parameters (used by the tests and the grading harness)."""

import nbformat
import pytest

from autograder.course import parameters_cell, pin_parameters


def _notebook():
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('device = "auto"  # cuda, mps or cpu\nepochs = 10  # passes\nlr = 1e-3')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), params]
    return nb


def test_pin_parameters_rewrites_values_and_keeps_comments():
    nb = _notebook()
    pin_parameters(nb, {"epochs": 2, "device": "cpu"})
    assert parameters_cell(nb).source == 'device = \'cpu\'  # cuda, mps or cpu\nepochs = 2  # passes\nlr = 1e-3'
    namespace = {}
    exec(parameters_cell(nb).source, namespace)
    assert (namespace["epochs"], namespace["device"], namespace["lr"]) == (2, "cpu", 1e-3)


def test_pin_parameters_rejects_unknown_names_and_notebooks_without_parameters():
    with pytest.raises(KeyError, match="'epoch' is not a parameter.*'epochs'"):
        pin_parameters(_notebook(), {"epoch": 2})
    nb = _notebook()
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        pin_parameters(nb, {"epochs": 2})
