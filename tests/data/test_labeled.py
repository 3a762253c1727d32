"""Readers of labelled text (CSV, TSV, JSONL, 'label text' lines, plain lines), the label
vocabulary, and the message for every kind of bad input: file, row and column named."""

import json

import pytest

from lmforge.data.labeled import LabelVocab, detect_format, read_labeled
from lmforge.errors import ConfigError, DataError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def jsonl(tmp_path, name, records):
    return write(tmp_path, name, "".join(json.dumps(r) + "\n" for r in records))


def test_csv_tsv_jsonl_and_label_text_read_the_same_rows(tmp_path):
    rows = [("a fine film", "pos"), ("dull, slow", "neg"), ('he said "no"', "neg")]
    csv = write(tmp_path, "d.csv", "id,text,label\n" + "".join(
        f'{i},"{t.replace(chr(34), 2 * chr(34))}",{lab}\n' for i, (t, lab) in enumerate(rows)))
    tsv = write(tmp_path, "d.tsv", "label\ttext\n" + "".join(f"{lab}\t{t}\n" for t, lab in rows))
    jl = jsonl(tmp_path, "d.jsonl", [{"text": t, "label": lab, "extra": 1} for t, lab in rows])
    lines = write(tmp_path, "d.train", "".join(f"{lab} {t}\n" for t, lab in rows))
    for path in (csv, tsv, jl, lines):
        d = read_labeled(path)
        assert d.texts == [t for t, _ in rows] and d.labels == [lab for _, lab in rows], path
    assert read_labeled(csv).rows == [2, 3, 4]  # the header is row 1
    assert read_labeled(lines).rows == [1, 2, 3]
    assert [detect_format(p) for p in (csv, tsv, jl, lines, "x.txt", "x.jsonl.gz")] == \
        ["csv", "tsv", "jsonl", "label-text", "text", "jsonl"]


def test_pairs_integer_labels_and_unlabelled_files(tmp_path):
    jl = jsonl(tmp_path, "nli.jsonl", [
        {"premise": "a man sleeps", "hypothesis": "a man is awake", "label": 2},
        {"premise": "x", "hypothesis": "y", "label": 0}])
    d = read_labeled(jl, text_column="premise", pair_column="hypothesis")
    assert d.pairs == ["a man is awake", "y"] and d.labels == ["2", "0"]
    txt = write(tmp_path, "s.txt", "first sentence\n\nsecond one\n")
    plain = read_labeled(txt, labels="optional")
    assert plain.texts == ["first sentence", "second one"] and plain.labels is None
    assert plain.rows == [1, 3]
    nolab = write(tmp_path, "n.csv", "text\nhello\n")
    assert read_labeled(nolab, labels="optional").labels is None
    labelled = write(tmp_path, "l.csv", "text,label\nhi,a\n")
    assert read_labeled(labelled, labels="optional").labels == ["a"]


def test_label_vocab_orders_numbers_numerically_and_keeps_explicit_order(tmp_path):
    d = read_labeled(write(tmp_path, "t.train", "10 a\n2 b\n1 c\n2 d\n"))
    assert LabelVocab.build(d).labels == ["1", "2", "10"]
    v = LabelVocab.build(d, ["10", "2", "1"])
    assert v.encode(d).tolist() == [0, 1, 2, 1]
    assert v.counts(v.encode(d)).tolist() == [1, 2, 1]


def test_sampling_and_held_out_split_are_seeded_and_disjoint(tmp_path):
    d = read_labeled(write(tmp_path, "t.train", "".join(f"{i % 2} text {i}\n" for i in range(50))))
    assert d.sample(10, 1).rows == d.sample(10, 1).rows and len(d.sample(10, 1)) == 10
    rest, held = d.split(0.2, 0)
    assert len(held) == 10 and len(rest) == 40 and not set(rest.rows) & set(held.rows)


# -- bad input: every message names the file, the row and the column ------------------------


def test_unknown_label_in_dev_names_file_row_and_column(tmp_path):
    vocab = LabelVocab.build(read_labeled(write(tmp_path, "train.csv", "text,label\na,x\nb,y\n")))
    dev = read_labeled(write(tmp_path, "dev.csv", "text,label\na,x\nb,z\n"))
    with pytest.raises(DataError) as e:
        vocab.encode(dev)
    msg = str(e.value)
    assert "dev.csv" in msg and "row 3" in msg and "column 'label'" in msg and "'z'" in msg
    assert "x, y" in msg  # the known labels
    sst_dev = read_labeled(write(tmp_path, "stsa.dev", "0 ok\n1 fine\n7 odd\n"))
    with pytest.raises(DataError, match=r"stsa\.dev: row 3, column 'label': label '7'"):
        LabelVocab(["0", "1"]).encode(sst_dev)


def test_missing_columns_list_the_columns_found(tmp_path):
    p = write(tmp_path, "d.csv", "sentence,sentiment\nhi,pos\n")
    with pytest.raises(DataError) as e:
        read_labeled(p)
    msg = str(e.value)
    assert "d.csv" in msg and "row 1" in msg and "column 'text'" in msg
    assert "'sentence', 'sentiment'" in msg
    with pytest.raises(DataError, match=r"column 'label'.*'sentence', 'sentiment'"):
        read_labeled(p, text_column="sentence")
    jl = jsonl(tmp_path, "d.jsonl", [{"text": "a", "label": 1}, {"text": "b", "y": 0}])
    with pytest.raises(DataError, match=r"d\.jsonl: row 2, column 'label'.*'text', 'y'"):
        read_labeled(jl)


def test_empty_texts_and_labels(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv: row 3, column 'text': the text is empty"):
        read_labeled(write(tmp_path, "e.csv", "text,label\nok,a\n  ,b\n"))
    with pytest.raises(DataError, match=r"e\.tsv: row 2, column 'label': the label is empty"):
        read_labeled(write(tmp_path, "e.tsv", "text\tlabel\nok\t\n"))
    with pytest.raises(DataError, match=r"e\.train: row 2, column 'text': the text is empty"):
        read_labeled(write(tmp_path, "e.train", "1 fine\n0\n"))
    with pytest.raises(DataError, match=r"e\.jsonl: row 1, column 'text': the text is empty"):
        read_labeled(jsonl(tmp_path, "e.jsonl", [{"text": "", "label": 1}]))


def test_non_string_texts_and_bad_labels(tmp_path):
    jl = jsonl(tmp_path, "n.jsonl", [{"text": "fine", "label": 1}, {"text": 42, "label": 0}])
    with pytest.raises(DataError, match=r"n\.jsonl: row 2, column 'text': the text must be a "
                                        r"string, got int 42"):
        read_labeled(jl)
    jl = jsonl(tmp_path, "p.jsonl", [{"text": "a", "hyp": ["x"], "label": 1}])
    with pytest.raises(DataError, match=r"p\.jsonl: row 1, column 'hyp'.*got list"):
        read_labeled(jl, pair_column="hyp")
    for bad, kind in ((1.5, "float"), (True, "bool"), (None, "NoneType")):
        jl = jsonl(tmp_path, "b.jsonl", [{"text": "a", "label": bad}])
        with pytest.raises(DataError, match=rf"b\.jsonl: row 1, column 'label'.*got {kind}"):
            read_labeled(jl)


def test_class_without_training_examples(tmp_path):
    train = read_labeled(write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\n"))
    with pytest.raises(DataError) as e:
        LabelVocab.build(train, ["pos", "neg", "neutral"])
    msg = str(e.value)
    assert "train.csv" in msg and "column 'label'" in msg and "'neutral' has no training" in msg
    with pytest.raises(DataError, match=r"train\.csv: row 3, column 'label': label 'neg'"):
        LabelVocab.build(train, ["pos", "other"])  # a training label outside the given list
    one = read_labeled(write(tmp_path, "one.csv", "text,label\na,pos\nb,pos\n"))
    with pytest.raises(DataError, match="at least 2 classes"):
        LabelVocab.build(one)


def test_malformed_files(tmp_path):
    with pytest.raises(DataError, match=r"r\.csv: row 3: 3 cells, but the header names 2"):
        read_labeled(write(tmp_path, "r.csv", "text,label\na,b\nc,d,e\n"))
    with pytest.raises(DataError, match=r"j\.jsonl: row 2: not valid JSON"):
        read_labeled(write(tmp_path, "j.jsonl", '{"text": "a", "label": 1}\n{oops\n'))
    with pytest.raises(DataError, match="does not exist"):
        read_labeled(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="no rows"):
        read_labeled(write(tmp_path, "h.csv", "text,label\n"))
    with pytest.raises(DataError, match="unlabelled"):
        read_labeled(write(tmp_path, "u.txt", "a\n"))
    with pytest.raises(ConfigError, match="pairs need a CSV"):
        read_labeled(write(tmp_path, "x.train", "1 a\n"), pair_column="b")
    with pytest.raises(ConfigError, match="unknown"):
        read_labeled(write(tmp_path, "y.csv", "text,label\na,b\n"), fmt="xml")


@pytest.mark.realdata
def test_reads_sst_binary():
    from encoder_helpers import sst_file

    d = read_labeled(sst_file("train"))
    assert len(d) == 6920 and set(d.labels) == {"0", "1"}
    assert d.texts[0].startswith("a stirring , funny and finally transporting")
