"""Official checkpoint mapping, safetensors conversion, and our save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from generate_fixtures import (
    FAST,
    official_movq_keys,
    official_unet_keys,
    save_text_encoder,
    tiny_pipeline,
    write_official_folder,
)

from generate import (
    CheckpointKeyError,
    InterpolationUNet3D,
    KandinskyUNet3D,
    KandinskyVideoPipeline,
    MissingWeightsError,
    MoVQ,
    convert_official_to_safetensors,
    load_component,
    map_official_state_dict,
    save_component,
)
from generate.checkpoints import check_state_dict, load_checked

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=5)


def _synthetic_official(module, official_keys, seed=0, donor=None):
    """A state dict keyed by the independently derived official names, shapes from the module
    (or from ``donor`` for keys the module does not have, e.g. the video MoVQ's encoder copy)."""
    shapes = {k: v.shape for k, v in (donor.state_dict().items() if donor is not None else [])}
    shapes.update({k: v.shape for k, v in module.state_dict().items()})
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shapes[k], generator=g) for k in sorted(official_keys)}


def test_official_key_mapping_on_synthetic_state_dicts(pipe):
    cfg = pipe.config
    cases = [
        ("unet", KandinskyUNet3D(cfg.unet), official_unet_keys(cfg.unet)),
        ("interpolation_unet", InterpolationUNet3D(cfg.interpolation_unet),
         official_unet_keys(cfg.interpolation_unet, interp=True)),
        ("movq", MoVQ(cfg.movq), official_movq_keys(cfg.movq)),
        ("video_movq", MoVQ(cfg.video_movq), official_movq_keys(cfg.video_movq, encoder=True)),
    ]
    for name, module, keys in cases:
        raw = _synthetic_official(module, keys - {"null_embedding"}, donor=MoVQ(cfg.movq))
        if name in ("unet", "interpolation_unet"):
            null = torch.randn(1, cfg.unet.context_dim)
            raw = {"unet": raw, "null_embedding": null}  # the official pickle layout
        mapped = map_official_state_dict(name, raw, module)
        load_checked(module, mapped, name)
        state = module.state_dict()
        source = raw["unet"] if "unet" in raw else raw
        for k, v in source.items():
            if name == "video_movq" and k.startswith(("encoder.", "quant_conv.")):
                assert k not in state  # the unused encoder copy is dropped by name
                continue
            assert torch.equal(state[k], v), k
        if name in ("unet", "interpolation_unet"):
            assert torch.equal(state["null_embedding"], raw["null_embedding"].reshape(-1))


def test_unknown_missing_and_misshaped_keys_are_refused_with_a_list(pipe):
    module = KandinskyUNet3D(pipe.config.unet)
    state = dict(module.state_dict())
    state.pop("image_in_layer.weight")
    state["down_samples.9.bogus.weight"] = torch.zeros(1)
    state["in_layer.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointKeyError) as e:
        check_state_dict(module, state, "unet (t2v.pt)")
    msg = str(e.value)
    assert "unet (t2v.pt)" in msg
    assert "down_samples.9.bogus.weight" in msg and "image_in_layer.weight" in msg and "in_layer.bias" in msg
    assert e.value.unknown == ["down_samples.9.bogus.weight"] and e.value.missing == ["image_in_layer.weight"]


def test_missing_official_files_name_the_expected_files(tmp_path):
    (tmp_path / "t2v.pt").write_bytes(b"")
    with pytest.raises(MissingWeightsError) as e:
        KandinskyVideoPipeline.from_official(tmp_path, load_text_encoder=False)
    msg = str(e.value)
    for name in ("interpolation.pt", "t5_projections.pt", "movq.pt", "video_movq.pt"):
        assert name in msg
    assert "ai-forever/KandinskyVideo_1_1" in msg and "t2v.pt" in msg  # where to get them; what was found


def test_missing_text_encoder_is_a_clear_error(tmp_path):
    from generate import KandinskyTextEncoder

    with pytest.raises(MissingWeightsError, match="text encoder"):
        KandinskyTextEncoder.from_pretrained(str(tmp_path / "nope"), projections={})


@pytest.fixture(scope="module")
def official_folder(pipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    write_official_folder(pipe, root / "kv")
    save_text_encoder(pipe, root / "t5")
    return root


def test_official_folder_loads_and_generates_the_same_video(pipe, official_folder):
    loaded = KandinskyVideoPipeline.from_official(official_folder / "kv", text_encoder=str(official_folder / "t5"))
    for name, module in pipe.components.items():
        ref, got = module.state_dict(), loaded.components[name].state_dict()
        if name == "text_encoder":
            assert set(ref) == set(got)
        assert all(torch.equal(ref[k], got[k]) for k in got), name
    a = pipe("a red car", width=64, height=64, fps="medium", seed=3, **FAST).array
    b = loaded("a red car", width=64, height=64, fps="medium", seed=3, **FAST).array
    assert np.array_equal(a, b)


def test_safetensors_conversion_is_preferred_and_identical(pipe, official_folder, tmp_path):
    import shutil

    folder = tmp_path / "kv"
    shutil.copytree(official_folder / "kv", folder)
    written = convert_official_to_safetensors(folder)
    assert {p.name for p in written} == {"t2v.safetensors", "interpolation.safetensors", "t5_projections.safetensors",
                                         "movq.safetensors", "video_movq.safetensors"}
    for p in folder.glob("*.pt"):  # prove the .pt files are not read any more
        p.write_bytes(b"not a pickle")
    loaded = KandinskyVideoPipeline.from_official(folder, text_encoder=str(official_folder / "t5"))
    for name in ("unet", "interpolation_unet", "movq", "video_movq"):
        ref, got = pipe.components[name].state_dict(), loaded.components[name].state_dict()
        assert all(torch.equal(ref[k], got[k]) for k in got), name


def test_pickles_are_loaded_with_weights_only(tmp_path):
    from generate.checkpoints import load_state_file

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    path = tmp_path / "bad.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_state_file(path)


def test_component_round_trip_is_exact(pipe, tmp_path):
    for name in ("unet", "interpolation_unet", "movq", "video_movq"):
        module = pipe.components[name]
        save_component(module, tmp_path / name)
        back = load_component(tmp_path / name, type(module))
        assert back.config == module.config
        ref, got = module.state_dict(), back.state_dict()
        assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) and ref[k].dtype == got[k].dtype for k in ref)
    with pytest.raises(ValueError, match="holds a KandinskyUNet3D"):
        load_component(tmp_path / "unet", MoVQ)


def test_pipeline_round_trip_is_exact(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    back = KandinskyVideoPipeline.from_pretrained(tmp_path / "saved")
    for name, module in pipe.components.items():
        ref, got = module.state_dict(), back.components[name].state_dict()
        assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref), name
    assert back.config.to_dict() == pipe.config.to_dict()
    a = pipe("a cat at night", width=64, height=64, seed=1, **FAST).array
    b = back("a cat at night", width=64, height=64, seed=1, **FAST).array
    assert np.array_equal(a, b)
    with pytest.raises(MissingWeightsError, match="pipeline.json"):
        KandinskyVideoPipeline.from_pretrained(tmp_path)
