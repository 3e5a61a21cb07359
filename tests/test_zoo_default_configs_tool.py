"""The default-configuration sweep tool (ditcheck.validate._zoo_default_configs) without running a real-size model:
its configs cut every layer count to 1 and keep diffusers' widths, and its table printer formats a result row."""

from __future__ import annotations

import pytest

diffusers = pytest.importorskip("diffusers")

from ditcheck.validate import _zoo_default_configs as tool


@pytest.mark.parametrize(("name", "cut"), [("FluxTransformer2DModel", {"num_layers": 1, "num_single_layers": 1}),
                                         ("WanTransformer3DModel", {"num_layers": 1}),
                                         ("SD3Transformer2DModel", {"num_layers": 1})])
def test_default_config_cuts_layers_and_keeps_widths(name: str, cut: dict[str, int]) -> None:
    defaults = tool._init_defaults(getattr(diffusers, name))
    kw = tool.default_config(name)
    assert kw == cut  # only the layer counts change, each to 1
    assert all(defaults[k] > 1 for k in cut)  # diffusers' defaults were deeper
    width_keys = {"num_attention_heads", "attention_head_dim"} & set(defaults)
    assert width_keys and not width_keys & set(kw)  # heads and head dims stay diffusers' defaults


def test_layer_re_names_layer_counts_only() -> None:
    assert all(tool.LAYER_RE.search(k) for k in ("num_layers", "num_single_layers", "depth", "n_layers"))
    assert not any(tool.LAYER_RE.search(k) for k in ("num_attention_heads", "attention_head_dim", "llama_layers"))


def test_fill_overrides_the_cut() -> None:
    assert tool.default_config("HunyuanDiT2DModel")["num_layers"] == 4  # even depth for its long skips
    assert tool.default_config("LatteTransformer3DModel")["attention_head_dim"] == 72


def test_table_formats_a_result_row() -> None:
    row = {"name": "FluxTransformer2DModel", "params_m": 535.2, "exit": 0, "validate_s": 355.94, "rss_gb": 11.371,
           "first": "conforms"}
    assert tool.format_row(row) == "| FluxTransformer2DModel | 535 | 0 | 355.9 | 11.37 | conforms |"
    skipped = {"name": "X", "params_m": 2289.0, "first": "skipped: a|b"}
    assert tool.format_row(skipped) == "| X | 2289 |  |  |  | skipped: a\\|b |"
    lines = tool.table([row]).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == len(tool.COLUMNS) + 1
