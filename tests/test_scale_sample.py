"""The FMA-large-shaped data set of any size (fmadask.fma.scale), written small: FMA's formats,
genre tree, label proportions, nested subsets and splits, a pool of real mp3s hard-linked under
every id, and FMA's defects."""
from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from fmadask.audio import AudioError, load_audio
from fmadask.fma.layout import audio_path
from fmadask.fma.metadata import load_genres, load_tracks, select_subset
from fmadask.fma.sample import TRACK_COLUMNS
from fmadask.fma.scale import (DEFECTS_PER_8000, LARGE_TRACKS, MEDIUM_TRACKS, SMALL_TRACKS,
                               TOP_GENRES, make_large_sample)
from fmadask.fma.tracks import track_table

N, CLIPS = 1500, 12


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_large_sample(tmp_path_factory.mktemp("large"), tracks=N, clips=CLIPS,
                             seconds=1.5, seed=3, processes=1)


def test_formats_and_the_161_genre_tree(large: Path) -> None:
    tracks = load_tracks(large)                     # refuses repeated or blank ids, bad cells
    assert tuple(tracks.columns) == TRACK_COLUMNS and len(tracks) == N
    assert tracks.index.is_unique and tracks.index.min() >= 2
    genres = load_genres(large)
    assert len(genres) == 161
    top = genres[genres["parent"] == 0]
    assert {(int(g), t) for g, t in top["title"].items()} == {(t.genre_id, t.title)
                                                               for t in TOP_GENRES}
    depth = {}
    for g in genres.index:                           # every chain ends at its top_level
        chain = [g]
        while genres.at[chain[-1], "parent"] != 0:
            chain.append(int(genres.at[chain[-1], "parent"]))
        assert chain[-1] == genres.at[g, "top_level"]
        depth[g] = len(chain)
    assert max(depth.values()) == 3
    # genres_all carries the hierarchy; genres.csv counts what tracks.csv lists.
    counts = collections.Counter()
    for ids, all_ids in zip(tracks["track", "genres"], tracks["track", "genres_all"]):
        assert set(ids) <= set(all_ids)
        assert {int(genres.at[g, "top_level"]) for g in ids} <= set(all_ids)
        counts.update(all_ids)
    assert all(genres.at[g, "#tracks"] == counts[g] for g in genres.index)


def test_subsets_labels_and_splits_in_fma_large_proportions(large: Path) -> None:
    tracks = load_tracks(large)
    sizes = {s: len(select_subset(tracks, s)) for s in ("small", "medium", "large")}
    assert sizes == {"small": round(SMALL_TRACKS * N / LARGE_TRACKS),
                     "medium": round(MEDIUM_TRACKS * N / LARGE_TRACKS), "large": N}
    small = track_table(large, "small")
    assert small["genre_top"].nunique() == 8
    assert small.groupby("genre_top").size().max() - small.groupby("genre_top").size().min() <= 1
    labelled = track_table(large, "large")
    # About half the tracks have no genre_top (53 % in FMA large): none can be derived either.
    without = tracks["track", "genre_top"].isna()
    assert labelled.attrs["excluded_no_genre"] == without.sum()
    assert abs(without.mean() - (1 - sum(t.large for t in TOP_GENRES) / LARGE_TRACKS)) < 0.005
    genres = load_genres(large)
    roots = tracks.loc[without, ("track", "genres_all")].map(
        lambda ids: len({int(genres.at[g, "top_level"]) for g in ids}))
    assert set(roots) <= {0, 2, 3, 4} and (roots >= 2).mean() > 0.9
    # genre_top of the large subset in FMA large's proportions (apportioned per subset: within
    # a track of each of the three).
    got = labelled.groupby("genre_top").size()
    for t in TOP_GENRES:
        assert abs(got.get(t.title, 0) - t.large * N / LARGE_TRACKS) <= 3, t.title
    # Every top-level genre appears in genres_all about as often as in FMA (random draws).
    share = {t.title: genres.at[t.genre_id, "#tracks"] / N for t in TOP_GENRES}
    for t in TOP_GENRES[:6]:                        # the big ones: hundreds of tracks each
        assert abs(share[t.title] / (t.tracks / LARGE_TRACKS) - 1) < 0.2, t.title
    # Splits: 80/10/10, every genre of small in all three, the same split in every subset.
    split = tracks["set", "split"]
    assert set(split) == {"training", "validation", "test"}
    assert 0.08 < (split == "test").mean() < 0.13 and 0.08 < (split == "validation").mean() < 0.13
    assert small.groupby("genre_top")["split"].nunique().min() == 3


def test_audio_is_a_pool_of_real_mp3s_linked_under_every_id_with_fma_defects(large: Path) -> None:
    tracks = load_tracks(large)
    for subset in ("small", "medium", "large"):      # each archive holds its subset, nothing more
        ids = set(select_subset(tracks, subset).index)
        files = {int(p.stem) for p in (large / f"fma_{subset}").rglob("*.mp3")}
        assert files == ids, subset
    inodes = collections.defaultdict(list)
    for tid in tracks.index:
        path = audio_path(large, int(tid), "large")
        inodes[os.stat(path).st_ino].append(path)
        for subset in ("small", "medium"):           # the same file, not another copy
            other = audio_path(large, int(tid), subset)
            if other.exists():
                assert os.path.samefile(other, path)
    shared = [paths for paths in inodes.values() if len(paths) > 1]
    assert len(shared) == CLIPS                      # every pool clip is used, most many times
    assert sum(len(p) for p in shared) > N - 20
    kinds = collections.Counter()
    for paths in inodes.values():
        try:
            y, sr = load_audio(paths[0])
        except AudioError as exc:
            kinds[type(exc).__name__] += 1
            continue
        kinds["ok" if len(paths) > 1 else "short" if len(y) < 1.4 * sr else "single"] += 1
        assert sr == 44100
    # Defects at FMA small's rates, at least one of each: empty (0 bytes and ID3 tag only),
    # far too short (some below fmadask's 1 s), truncated.
    want = {kind: max(1, round(N * n / 8000)) for kind, n in DEFECTS_PER_8000.items()}
    assert kinds["ok"] == CLIPS and kinds["EmptyAudio"] == want["empty"]
    assert kinds["TruncatedAudio"] == want["truncated"]
    assert kinds["short"] + kinds["TooShortAudio"] == want["short"]


def test_refuses_a_folder_that_is_not_a_sample(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        make_large_sample(tmp_path, tracks=200, clips=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
