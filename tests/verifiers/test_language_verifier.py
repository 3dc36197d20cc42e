from verifiers.base import VerifyContext, get_verifier
from verifiers.language import script_tokens, target_share

CTX = VerifyContext(gold=None)


def test_tokens_split_by_script_and_ideographs_count_per_character():
    assert script_tokens("so x等于 3") == [("LATIN", "so"), ("LATIN", "x"), ("CJK", "等"), ("CJK", "于")]
    assert script_tokens("12 + 3 = 15 !") == []
    assert [s for s, _ in script_tokens("Привет world")] == ["CYRILLIC", "LATIN"]


def test_share_hand_computed():
    assert target_share("so x等于 3", frozenset({"LATIN"})) == (0.5, 4)      # 2 of 4 tokens
    assert target_share("", frozenset({"LATIN"})) == (1.0, 0)
    assert target_share("等于 so", frozenset({"CJK"})) == (2 / 3, 3)


def test_verifier_scores_the_think_block_by_default():
    v = get_verifier("language_consistency")
    mixed = "<think>first add 等于 then carry</think> <answer>答案</answer>"
    verdict = v(mixed, CTX)     # think block: first add 等 于 then carry -> 4/6 Latin
    assert abs(verdict.reward - 4 / 6) < 1e-12 and verdict.status == "wrong"
    assert v("<think>all english here</think>答案", CTX).status == "correct"
    whole = get_verifier("language_consistency", section="all")
    assert whole(mixed, CTX).reward == 0.5          # tags ignored: first add 等 于 then carry 答 案 -> 4 of 8


def test_bad_options_are_one_line():
    import pytest
    with pytest.raises(ValueError, match="section must be think or all"):
        get_verifier("language_consistency", section="cot")
