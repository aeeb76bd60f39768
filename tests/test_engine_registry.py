"""Registry lookup: exact, alias, case-insensitive, did-you-mean, duplicates."""
import pytest

from engine.registry import Registry, RegistryKeyError


def make_registry():
    reg = Registry("TRAINER")

    @reg.register(aliases=("COMMA",))
    class CoMMA:
        pass

    @reg.register()
    class MaPLe:
        pass

    class ZeroshotCLIP:
        pass

    assert reg.register(ZeroshotCLIP) is ZeroshotCLIP  # plain call form returns the object
    return reg, CoMMA, MaPLe, ZeroshotCLIP


def test_exact_alias_and_case_insensitive_lookup():
    reg, comma, maple, zs = make_registry()
    assert reg.get("CoMMA") is comma
    assert reg.get("COMMA") is comma  # alias
    assert reg.get("comma") is comma  # case-insensitive
    assert reg.get("maple") is maple and reg.get("MAPLE") is maple
    assert reg.get("zeroshotclip") is zs
    assert reg.canonical_name("comma") == "CoMMA"
    assert "MaPLe" in reg and "maple" in reg and "COMMA" in reg and "CoOp" not in reg
    assert reg.registered_names() == ["CoMMA", "MaPLe", "ZeroshotCLIP"]
    assert reg.aliases() == {"COMMA": "CoMMA"}


def test_miss_gives_one_line_message_with_hint_and_names():
    reg, *_ = make_registry()
    with pytest.raises(KeyError) as exc:
        reg.get("MaPLee")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith('"MaPLee" is not registered in the "TRAINER" registry.')
    assert 'Did you mean "MaPLe"?' in msg
    assert "Available: CoMMA, MaPLe, ZeroshotCLIP" in msg
    with pytest.raises(RegistryKeyError) as exc:
        reg.get("Zeroshot-CLIP")
    assert 'Did you mean "ZeroshotCLIP"?' in str(exc.value)
    with pytest.raises(RegistryKeyError) as exc:
        reg.get("qqqqqqqq")
    assert "Did you mean" not in str(exc.value)


def test_alias_typo_hint_points_to_the_class():
    reg, *_ = make_registry()
    with pytest.raises(RegistryKeyError, match='Did you mean "CoMMA"'):
        reg.get("COMA")


def test_duplicates_rejected_unless_forced():
    reg, comma, *_ = make_registry()

    class MaPLe:
        pass

    with pytest.raises(KeyError, match="already registered"):
        reg.register(MaPLe)
    reg.register(MaPLe, force=True)
    assert reg.get("MaPLe") is MaPLe

    class COMMA:
        pass

    with pytest.raises(KeyError, match="already an alias"):
        reg.register(COMMA)


def test_ambiguous_case_insensitive_match_is_an_error():
    reg = Registry("X")

    class Foo:
        pass

    class FOO:
        pass

    reg.register(Foo)
    reg.register(FOO)
    assert reg.get("Foo") is Foo and reg.get("FOO") is FOO
    with pytest.raises(RegistryKeyError, match="ambiguous"):
        reg.get("foo")


def test_empty_registry_message():
    with pytest.raises(RegistryKeyError, match="empty"):
        Registry("DATASET").get("Shapes")


def test_project_trainer_registry_resolves_comma_alias():
    pytest.importorskip("trainers.comma")
    import trainers  # noqa: F401  (registration side effect)
    from engine.trainer import TRAINER_REGISTRY

    assert TRAINER_REGISTRY.get("COMMA").__name__ == "CoMMA"
    assert TRAINER_REGISTRY.get("comma") is TRAINER_REGISTRY.get("COMMA")
