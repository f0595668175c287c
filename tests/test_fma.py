"""The FMA metadata layer: FMA's CSV formats, subsets, labels, splits, paths, bad input."""
from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmadask.cli import build_parser, main
from fmadask.errors import ConfigError, DataError
from fmadask.fma.info import dataset_info
from fmadask.fma.labels import derive_genre_top, genre_top, genre_tree
from fmadask.fma.layout import audio_path, audio_relpath
from fmadask.fma.metadata import (load_echonest, load_features, load_genres, load_tracks,
                                  parse_list, select_subset)
from fmadask.fma.sample import TRACK_COLUMNS
from fmadask.fma.splits import official_split, stratified_split
from fmadask.fma.tracks import track_table

# Written by hand in FMA's exact layouts (header rows, index row, list literals, empty cells).
TRACKS_CSV = """\
,album,set,set,track,track,track,track,track
,date_created,split,subset,date_created,genre_top,genres,genres_all,tags
track_id,,,,,,,,
2,2008-11-26 01:44:45,training,small,2008-11-26 01:48:12,Hip-Hop,[21],[21],[]
3,2008-11-26 01:44:45,test,medium,2008-11-26 01:48:14,Hip-Hop,[21],[21],"['hiphop', 'rap']"
5,2008-11-26 01:44:45,validation,large,2008-11-26 01:48:20,,[76],"[12, 76]",[]
10,2008-11-26 01:45:08,training,large,2008-11-25 17:49:06,,"[76, 21]","[12, 21, 76]",[]
"""
GENRES_CSV = """\
genre_id,#tracks,parent,title,top_level
12,32923,0,Rock,12
21,8389,0,Hip-Hop,21
76,1000,12,Experimental Rock,12
"""
FEATURES_CSV = """\
feature,chroma_cens,chroma_cens,zcr
statistics,kurtosis,kurtosis,std
number,01,02,01
track_id,,,
2,7.180653e+00,5.230309e+00,1.034600e-02
3,1.888963e+00,7.603470e-01,2.234800e-02
"""
ECHONEST_CSV = """\
,echonest,echonest,echonest
,audio_features,audio_features,metadata
,acousticness,danceability,album_name
track_id,,,
2,0.416675233,0.675893985,AWOL - A Way Of Life
"""


@pytest.fixture()
def meta_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fma_metadata"
    folder.mkdir()
    for name, text in [("tracks.csv", TRACKS_CSV), ("genres.csv", GENRES_CSV),
                       ("features.csv", FEATURES_CSV), ("echonest.csv", ECHONEST_CSV)]:
        (folder / name).write_text(text)
    return tmp_path


def test_tracks_csv_parsed_like_fma(meta_dir: Path) -> None:
    tracks = load_tracks(meta_dir)
    assert list(tracks.index) == [2, 3, 5, 10] and tracks.index.name == "track_id"
    assert tracks.loc[10, ("track", "genres_all")] == [12, 21, 76]
    assert tracks.loc[3, ("track", "tags")] == ["hiphop", "rap"]
    assert tracks.loc[2, ("track", "tags")] == []
    assert tracks.loc[2, ("track", "date_created")] == pd.Timestamp("2008-11-26 01:48:12")
    subset = tracks["set", "subset"]
    assert subset.cat.ordered and list(subset.cat.categories) == ["small", "medium", "large"]
    assert pd.isna(tracks.loc[5, ("track", "genre_top")])


def test_genres_features_echonest_parsed(meta_dir: Path) -> None:
    genres = load_genres(meta_dir)
    assert genres.index.name == "genre_id" and genres.loc[76, "top_level"] == 12
    assert genre_tree(genres) == {0: [12, 21], 12: [76]}
    features = load_features(meta_dir / "fma_metadata" / "features.csv")
    assert features.columns.names == ["feature", "statistics", "number"]
    assert features.loc[3, ("zcr", "std", "01")] == pytest.approx(0.022348)
    assert features.dtypes.eq(np.float32).all()
    echonest = load_echonest(meta_dir)
    assert echonest.loc[2, ("echonest", "audio_features", "danceability")] == pytest.approx(0.675893985)


def test_subsets_are_nested(meta_dir: Path) -> None:
    tracks = load_tracks(meta_dir)
    assert list(select_subset(tracks, "small").index) == [2]
    assert list(select_subset(tracks, "medium").index) == [2, 3]
    assert list(select_subset(tracks, "large").index) == [2, 3, 5, 10]
    assert list(select_subset(tracks, "full").index) == [2, 3, 5, 10]
    with pytest.raises(DataError, match="unknown subset 'tiny'"):
        select_subset(tracks, "tiny")


def test_genre_top_derived_from_single_root_else_excluded(meta_dir: Path) -> None:
    tracks, genres = load_tracks(meta_dir), load_genres(meta_dir)
    labels = genre_top(tracks, genres)
    # 5 has only Rock's child: derived as Rock. 10 spans Rock and Hip-Hop: excluded and counted.
    assert labels.to_dict() == {2: "Hip-Hop", 3: "Hip-Hop", 5: "Rock"}
    assert labels.attrs["excluded_no_genre"] == 1
    assert derive_genre_top([], genres) is None


@pytest.mark.parametrize("cell", ["[]", "[21, 76, 1235]", "['rock', \"rock'n'roll\"]",
                                  '["caf\\u00e9"]', "[1.5]", "[1, 'x']"])
def test_list_cells_read_as_python_reads_them(cell: str) -> None:
    # The genre columns take a JSON fast path; every other cell must still read as before.
    assert parse_list(cell) == ast.literal_eval(cell)


@pytest.mark.parametrize("cell", ["[1, 2", "[true]", "{1: 2}", "x"])
def test_a_damaged_list_cell_is_refused(cell: str) -> None:
    with pytest.raises(ValueError, match="is not a list"):
        parse_list(cell)


def test_official_split(meta_dir: Path) -> None:
    assert official_split(load_tracks(meta_dir)).to_dict() == {
        2: "training", 3: "test", 5: "validation", 10: "training"}


def test_stratified_split_counts_and_determinism() -> None:
    rng = np.random.default_rng(1)
    ids = np.sort(rng.choice(200_000, size=8000, replace=False))
    labels = pd.Series(np.repeat([f"g{i}" for i in range(8)], 1000), index=ids)
    split = stratified_split(labels, seed=42)
    assert split.value_counts().to_dict() == {"training": 6480, "test": 800, "validation": 720}
    per_genre = pd.crosstab(labels, split)
    assert (per_genre["test"] == 100).all() and (per_genre["validation"] == 90).all()
    assert split.equals(stratified_split(labels.sample(frac=1, random_state=3), seed=42).loc[ids])
    assert not split.equals(stratified_split(labels, seed=7))


def test_audio_path_layout(tmp_path: Path) -> None:
    assert audio_relpath(2) == "000/000002.mp3"
    assert audio_relpath(155066) == "155/155066.mp3"
    assert audio_path(tmp_path, 98565, "medium") == tmp_path / "fma_medium" / "098" / "098565.mp3"


def test_bad_inputs_give_one_line_errors(tmp_path: Path, meta_dir: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_tracks(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="tracks.csv not found"):
        load_tracks(tmp_path / "empty")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not FMA's tracks.csv"):
        load_tracks(bad)
    bad.write_text(",x,x\n,y,z\ntrack_id,,\n1,2,3\n")
    with pytest.raises(DataError, match="missing columns set.subset"):
        load_tracks(bad)
    with pytest.raises(DataError, match="not FMA's genres.csv"):
        load_genres(bad)
    with pytest.raises(ConfigError, match="unknown split"):
        track_table(meta_dir, split="random")


def test_cli_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    for argv in (["info", str(tmp_path / "missing")], ["info", str(tmp_path)],
                 ["info", str(tmp_path), "--subset", "tiny"],
                 ["sample", str(tmp_path / "s"), "--tracks-per-genre", "1"]):
        proc = subprocess.run([sys.executable, "-m", "fmadask.cli", *argv],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fmadask: ")
        assert "Traceback" not in proc.stderr


def test_every_subcommand_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    commands = list(subparsers.choices)
    assert {"sample", "fetch", "info"} <= set(commands)
    for command in commands:
        assert command in listing
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: fmadask " + command in capsys.readouterr().out


def test_sample_loads_like_fma(sample_dir: Path) -> None:
    tracks = load_tracks(sample_dir)
    assert tuple(tracks.columns) == TRACK_COLUMNS and len(TRACK_COLUMNS) == 52
    header = (sample_dir / "fma_metadata" / "tracks.csv").read_text().splitlines()[:3]
    assert header[0].startswith(",album,album") and header[2].startswith("track_id,")
    genres = load_genres(sample_dir)
    assert sorted(genres.loc[genres["parent"] == 0, "title"]) == [
        "Electronic", "Experimental", "Folk", "Hip-Hop", "Instrumental", "International",
        "Pop", "Rock"]
    # genres_all carries the hierarchy: every child genre's root is listed too.
    for ids, all_ids in zip(tracks["track", "genres"], tracks["track", "genres_all"]):
        roots = {int(genres.at[g, "top_level"]) for g in ids}
        assert roots <= set(all_ids) and set(ids) <= set(all_ids)
    table = track_table(sample_dir, "small")
    assert table.groupby("genre_top").size().min() >= 3
    assert set(table["split"]) == {"training", "validation", "test"}
    assert all(Path(p).is_file() for p in table["path"])


def test_sample_is_deterministic_whatever_the_processes(tmp_path: Path) -> None:
    a = make_small(tmp_path / "a", processes=1)
    b = make_small(tmp_path / "b", processes=3)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_sample_overlap_mixes_the_genres_parts_and_keeps_the_metadata(tmp_path: Path) -> None:
    from fmadask.fma.sample import make_sample

    plain = make_small(tmp_path / "plain")
    mixed = make_sample(tmp_path / "mixed", tracks_per_genre=3, seconds=1.5, seed=5, overlap=1.0)
    csv = Path("fma_metadata") / "tracks.csv"
    assert (plain / csv).read_bytes() == (mixed / csv).read_bytes()
    clips = sorted(p.relative_to(plain) for p in plain.rglob("*.mp3") if p.stat().st_size > 4096)
    changed = [rel for rel in clips if (plain / rel).read_bytes() != (mixed / rel).read_bytes()]
    assert len(changed) > 0.6 * len(clips), (len(changed), len(clips))


def test_borrowed_parts_follow_the_overlap() -> None:
    from fmadask.fma.sample import PARTS, RECIPES, blend, borrowed_parts

    def shares(overlap: float) -> dict[str, float]:
        rng, track_rng = np.random.default_rng(1), np.random.default_rng(2)
        draws = [borrowed_parts(overlap, rng, track_rng) for _ in range(4000)]
        return {part: np.mean([part in d for d in draws]) for part in PARTS}

    assert shares(0.0) == pytest.approx({"rhythm": 0.25, "harmony": 0, "timbre": 0, "mix": 0},
                                        abs=0.03)
    assert shares(0.6) == pytest.approx(dict.fromkeys(PARTS, 0.6), abs=0.03)
    # overlap 0 draws nothing from the new stream: the sample's audio stays what it was.
    untouched = np.random.default_rng(1)
    borrowed_parts(0.0, untouched, np.random.default_rng(2))
    assert untouched.random() == np.random.default_rng(1).random()
    rock, folk = RECIPES[4], RECIPES[2]
    mixed = blend(rock, {"timbre": folk})
    assert (mixed.title, mixed.scale, mixed.kick) == (rock.title, rock.scale, rock.kick)
    assert (mixed.harmonics, mixed.pluck, mixed.drive) == (folk.harmonics, folk.pluck, folk.drive)


def make_small(out: Path, processes: int = 0) -> Path:
    from fmadask.fma.sample import make_sample

    return make_sample(out, tracks_per_genre=3, seconds=1.5, seed=5, processes=processes)


def test_info_counts_the_sample(sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = dataset_info(sample_dir, "small")
    n_labelled = len(track_table(sample_dir, "small"))
    n_small = len(track_table(sample_dir, "small", target="genres_all"))
    assert info["subsets"]["small"] == n_small
    assert info["subsets"]["medium"] == n_small + 8 and info["subsets"]["large"] == n_small + 16
    assert info["genres"].loc["total", "total"] == n_labelled
    # the sample's clips of two top-level genres have no genre_top
    assert info["excluded_no_genre"] == n_small - n_labelled == 8
    assert info["missing_audio"] == []
    assert main(["info", str(sample_dir)]) == 0
    out = capsys.readouterr().out
    assert "audio files missing on disk: 0" in out and "Instrumental" in out
    # FMA's medium audio is not in the sample: info says so instead of failing.
    assert len(dataset_info(sample_dir, "medium")["missing_audio"]) == n_small + 8


# ------------------------------------------------------------- damaged tracks.csv (issue 9)


def _damaged(sample_dir: Path, tmp_path: Path, damage) -> Path:  # noqa: ANN001
    """A copy of the sample's metadata whose tracks.csv lines went through ``damage``."""
    meta = tmp_path / "fma_metadata"
    shutil.copytree(sample_dir / "fma_metadata", meta)
    lines = (meta / "tracks.csv").read_text().splitlines(keepends=True)
    (meta / "tracks.csv").write_text("".join(damage(lines)))
    return meta


def _cut_in_genre_top(lines: list[str]) -> list[str]:
    """Cut the file inside the genre_top cell of its last track that has one, as a download
    cut mid-row leaves it ("Electronic" -> "Ele")."""
    genres = ("Hip-Hop", "Pop", "Folk", "Experimental", "Rock", "International", "Electronic",
              "Instrumental")
    last = max(i for i, line in enumerate(lines[3:], 3)
               if any(f",{g}," in line for g in genres))
    genre = next(g for g in genres if f",{g}," in lines[last])
    cut = lines[last].index(f",{genre},") + 4
    return lines[:last] + [lines[last][:cut]]


def _cut_after_subset(lines: list[str]) -> list[str]:
    """Cut the file right after the set.subset cell of its last small track: every cell up to
    the subset is whole, the row just ends there (no track.* cell, not even empty ones)."""
    last = max(i for i, line in enumerate(lines[3:], 3) if ",small," in line)
    return lines[:last] + [lines[last][:lines[last].index(",small,") + len(",small")]]


def _bogus_split(lines: list[str]) -> list[str]:
    """The split of line 5's track is not one of FMA's three."""
    split = next(s for s in ("training", "validation", "test") if f",{s},small," in lines[4])
    return lines[:4] + [lines[4].replace(f",{split},small,", ",bogus,small,", 1)] + lines[5:]


@pytest.mark.parametrize("damage, words", [
    (_cut_in_genre_top, ["column track.genre_top", "is not a top-level genre"]),
    (_cut_after_subset, ["track_id", "33 of the 53 cells", "cut short"]),
    (lambda lines: _cut_after_subset(lines)[:-1] + [_cut_after_subset(lines)[-1] + "\n"],
     ["track_id", "33 of the 53 cells", "cut short"]),
    (_bogus_split, ["line 5", "column set.split", "'bogus'", "training, validation or test"]),
    (lambda lines: lines[:-1] + [lines[-1][:40]], ["column set.", "is empty"]),
    (lambda lines: lines[:5] + ["," + lines[5].split(",", 1)[1]] + lines[6:],
     ["line 6", "track_id nan", "not a whole number"]),
    (lambda lines: lines[:5] + ["x12," + lines[5].split(",", 1)[1]] + lines[6:],
     ["line 6", "not a whole number"]),
    (lambda lines: lines + [lines[4]], ["repeats line 5"]),
    (lambda lines: lines[:4] + [lines[4].replace('"[', '"[(', 1)] + lines[5:],
     ["line 5", "column track.genres", "is not a list"]),
])
def test_damaged_tracks_csv_is_refused_naming_line_and_column(sample_dir: Path, tmp_path: Path,
                                                              damage, words) -> None:  # noqa: ANN001
    meta = _damaged(sample_dir, tmp_path, damage)
    with pytest.raises(DataError) as info:
        load_tracks(meta)
    message = str(info.value)
    assert "\n" not in message and "tracks.csv line" in message
    for word in words:
        assert word in message, message


def test_sample_never_writes_over_a_data_set(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fma"
    (data / "fma_metadata").mkdir(parents=True)
    mine = {data / "fma_metadata" / "tracks.csv": b"my real tracks.csv",
            data / "notes.txt": b"mine"}
    for path, content in mine.items():
        path.write_bytes(content)
    argv = ["sample", str(data), "--tracks-per-genre", "3", "--seconds", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and "not empty" in err
    assert {p: p.read_bytes() for p in mine} == mine and not (data / "fma_small").exists()
    assert main([*argv, "--force"]) == 0                        # asked for: written
    assert (data / "fma_small").is_dir() and (data / "notes.txt").read_bytes() == b"mine"
    assert main(argv) == 0                                      # an earlier sample: rewritten


def test_a_second_sample_into_the_same_folder_is_refused(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from fmadask.lock import LOCK_NAME
    from lock_holder import held_lock

    out = tmp_path / "fma"
    with held_lock(out, "fmadask sample") as holder:
        assert main(["sample", str(out), "--tracks-per-genre", "3", "--seconds", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"fmadask sample (pid {holder.pid} " in err, err
        assert str(out / LOCK_NAME) in err
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def _small_clips(out: Path) -> set[Path]:
    """The mp3 paths of the small tracks the sample's tracks.csv lists."""
    tracks = load_tracks(out)
    return {audio_path(out, t, "small") for t in tracks.index[tracks["set", "subset"] == "small"]}


def test_sample_over_an_earlier_sample_replaces_only_what_that_sample_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No clip of the earlier sample is left beside the new tracks.csv; a file the sample did
    not write (the user's own) is never touched."""
    from fmadask.fma.sample import SAMPLE_MARKER, make_sample

    out = tmp_path / "fma"
    make_sample(out, tracks_per_genre=4, seconds=1.0, seed=1)
    first = _small_clips(out)
    mine = {out / "notes.txt": b"mine", out / "fma_small" / "000" / "000001.mp3": b"my clip"}
    for path, content in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    make_sample(out, tracks_per_genre=3, seconds=1.0, seed=2)
    second = _small_clips(out)
    assert first - second                                     # other tracks: orphans possible
    on_disk = set((out / "fma_small").rglob("*.mp3"))
    assert on_disk == second | {out / "fma_small" / "000" / "000001.mp3"}
    assert {p: p.read_bytes() for p in mine} == mine
    assert all(p.is_dir() and any(p.iterdir()) for p in (out / "fma_small").iterdir())
    # A sample by an fmadask that did not record its files is not known to be only a sample.
    old = tmp_path / "old"
    (old / "fma_small").mkdir(parents=True)
    (old / SAMPLE_MARKER).write_text("written by fmadask sample\n")
    assert main(["sample", str(old), "--tracks-per-genre", "3", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and "record" in err, err
