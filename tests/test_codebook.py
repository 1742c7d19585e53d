"""The codebook and region table are complete and in docs/method.md's order."""
import pytest

from data_prep import codebook


def test_class_order_matches_method_md():
    assert codebook.EXPRESSIONS == ("Neutral", "Happiness", "Surprise", "Fear", "Anger",
                                    "Disgust", "Sadness", "Contempt")
    assert codebook.NUM_BASIC == 7


def test_codebook_follows_the_paper_figure():
    assert codebook.EXPRESSION_AUS["Disgust"] == (9, 10, 16, 17, 25, 26)  # AU10, not AU5
    assert codebook.EXPRESSION_AUS["Neutral"] == ()
    assert codebook.class_aus(3) == (1, 2, 4, 5, 20, 25, 26, 27)


def test_every_codebook_au_is_named_and_has_a_region():
    used = {au for aus in codebook.EXPRESSION_AUS.values() for au in aus}
    assert used <= set(codebook.AU_REGIONS)
    assert used <= set(codebook.AU_NAMES)


def test_every_non_neutral_class_has_ellipses():
    for label in range(1, len(codebook.EXPRESSIONS)):
        assert codebook.class_ellipses(label), codebook.EXPRESSIONS[label]
    assert codebook.class_ellipses(0) == ()


def test_contempt_keeps_only_the_subjects_right_side():
    ellipses = codebook.class_ellipses(codebook.EXPRESSIONS.index("Contempt"))
    assert {e.side for e in ellipses} == {"right"}
    assert len(ellipses) == 2  # AU12 at point 48, AU14 outward of it


def test_mirror_is_an_involution_pairing_right_with_left():
    m = codebook.IBUG_MIRROR
    assert all(m[m[i]] == i for i in range(68))
    assert m[0] == 16 and m[17] == 26 and m[36] == 45 and m[31] == 35 and m[48] == 54
    assert m[59] == 55 and m[67] == 65 and m[30] == 30 and m[8] == 8
    assert all(m[i] not in codebook.IBUG_RIGHT and m[i] != i for i in codebook.IBUG_RIGHT)
    assert len(codebook.IBUG_RIGHT) * 2 == sum(m[i] != i for i in range(68))


@pytest.mark.parametrize("label", [-1, 8, 100])
def test_out_of_range_label_is_rejected_with_the_valid_range(label):
    with pytest.raises(ValueError, match=rf"{label}.*0\.\.7"):
        codebook.class_aus(label)
