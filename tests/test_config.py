import pytest

from workbench.core import config


def test_teacher_fold0_resolves_with_defaults():
    cfg = config.resolve(["recipe=teacher_fold0"])
    assert cfg["fold"] == 0 and cfg["arch"] == "unet" and cfg["encoder"].startswith("tf_efficientnet_lite")
    assert cfg["out"] == "runs/unet_effnet/fold0"


def test_overrides_are_typed():
    cfg = config.resolve(["recipe=teacher_fold0", "epochs=3", "lr=0.01", "image_size=128", "crop_size=0", "fold=2",
                          "batch_size=4", "arch=fpn", "encoder=tf_efficientnet_lite0", "data=/x", "out=/tmp/o"])
    assert (cfg["epochs"], cfg["lr"], cfg["image_size"], cfg["fold"]) == (3, 0.01, 128, 2)
    assert (cfg["arch"], cfg["data"], cfg["out"]) == ("fpn", "/x", "/tmp/o")
    assert config.resolve(["recipe=student", "teachers=[a,b]"])["teachers"] == ["a", "b"]


def test_base_recipes_chain():
    cfg = config.resolve(["recipe=fpn_effnet"])
    assert cfg["arch"] == "fpn" and cfg["encoder"] == "tf_efficientnet_lite2"  # from fpn_convnext + own


@pytest.mark.parametrize("args, message", [
    (["recipe=teacher_fold0", "epoch=3"], "unknown key 'epoch'"),
    (["recipe=teacher_fold0", "epochs=ten"], "expected an integer"),
    (["recipe=teacher_fold0", "lr=fast"], "expected a number"),
    (["recipe=teacher_fold0", "save_oof=maybe"], "expected true or false"),
    (["recipe=teacher_fold0", "loss=l2"], "loss='l2'"),
    (["recipe=teacher_fold0", "fold=7"], "fold=7"),
    (["recipe=teacher_fold0", "epochs"], "expected key=value"),
    (["recipe=nope"], "recipe 'nope' not found"),
    (["recipe=teacher_fold0", "epochs=0"], "at least 1"),
])
def test_bad_overrides_fail_clearly(args, message):
    with pytest.raises(config.ConfigError, match=message):
        config.resolve(args)


def test_resolved_config_dumps_to_yaml():
    import yaml
    cfg = config.resolve(["recipe=h2o_seed"])
    assert yaml.safe_load(config.dump(cfg)) == cfg
    assert cfg["loss"] == "bce_dice" and cfg["normalization"] == "unit" and cfg["augment"] == "none"
