"""The sample detail view: one training sample large, its class and file, its embedding, its
nearest neighbours in the embedding, the saved selections that hold it and its per-sample scores.

This is how label errors and near-duplicates are found: a sample whose neighbours are all of
another class, or neighbours that are the same image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from toolkit.dashboard import common
from toolkit.embedding import Embedding
from toolkit.selection import list_selections
from toolkit.viz.images import upscale

NEIGHBOURS = 12


@st.cache_resource(max_entries=4, show_spinner=False)
def _unit_rows(fingerprint: str, _vectors: np.ndarray) -> np.ndarray:
    """The embedding's rows scaled to unit length (cosine similarity is then a dot product), read-only.

    A shared resource, not ``cache_data``: that returns a copy on every run, 855 MB at a million
    rows, which made each run of the map page with a sample open take seconds.
    """
    norms = np.linalg.norm(_vectors, axis=1, keepdims=True)
    unit = (_vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    unit.setflags(write=False)
    return unit


def nearest_neighbours(emb: Embedding, index: int, count: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` training samples most similar to ``index`` (cosine), itself excluded, and their similarity."""
    unit = _unit_rows(emb.fingerprint, emb.vectors)
    similarity = unit @ unit[index]
    similarity[index] = -np.inf
    count = min(count, len(similarity) - 1)
    order = np.argpartition(-similarity, count)[:count] if count < len(similarity) else np.arange(len(similarity))
    order = order[np.argsort(-similarity[order], kind="stable")]
    return order, similarity[order]


def _sample_index(text: str, count: int) -> int:
    """``?sample=N`` as an index of the training split (a ValueError when it is not one)."""
    index = int(text)
    if not 0 <= index < count:
        raise ValueError(f"no training sample {index}")
    return index


def detail_section(ctx: common.Context, emb: Embedding, page: str, *, always: bool = False) -> None:
    """A page's *Sample detail*: the sample typed in, clicked on the map or picked under a grid.

    Its index input has the key ``{page}_detail_index`` (what a grid's picker sets) and is
    kept in the URL as ``?sample=N``. Unless ``always``, the section shows only once a
    sample was picked, with a button that closes it.
    """
    key = f"{page}_detail_index"
    count = ctx.dataset.num_train
    common.restore_choice(key, "sample", parse=lambda text: _sample_index(text, count))
    if not always and st.session_state.get(key) is None:
        return
    st.header("Sample detail")
    left, right = st.columns([3, 1])
    index = int(
        left.number_input(
            "Sample index",
            0,
            count - 1,
            key=key,
            help="Or pick an image under a grid"
            + (", or click a point on the map (with Pan or Zoom picked in its toolbar)." if always else "."),
        )
    )
    common.set_param("sample", index)
    if not always:
        right.button("Close", key=f"{page}_detail_close", icon=":material/close:", on_click=_close, args=(key,))
    sample_detail(ctx, emb, index, open_in=key)


def _close(key: str) -> None:
    """Close the detail view: forget its sample (and take it out of the URL)."""
    st.session_state.pop(key, None)
    common.set_param("sample", None)


def sample_detail(ctx: common.Context, emb: Embedding, index: int, *, open_in: str | None = None) -> None:
    """Draw the detail view of training sample ``index``; a pick among its neighbours opens one in ``open_in``."""
    dataset = ctx.dataset
    label = int(dataset.train_labels[index])
    left, right = st.columns([1, 3])
    with left:
        st.image(upscale(dataset.train_images[index], 192), width=192)
    with right:
        st.markdown(f"**Sample #{index}** · class **{dataset.class_names[label]}** (label {label})")
        if dataset.train_files is not None:
            st.caption(f"File: `{dataset.train_files[index]}`")
        containing = [
            s.name for s in list_selections(dataset, workspace=ctx.workspace) if bool(np.any(s.indices == index))
        ]
        st.caption("In saved selections: " + (", ".join(f"`{name}`" for name in containing) if containing else "none"))
        scores = emb.sample_scores()
        if scores:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "score": name,
                            "value": float(values[index]),
                            "percentile": 100.0 * float(np.mean(values <= values[index])),
                        }
                        for name, values in scores.items()
                    ]
                ),
                hide_index=True,
                key="detail_scores",
            )
        st.bar_chart(
            pd.DataFrame({"activation": emb.vectors[index]}),
            height=140,
            x_label=f"dimension of {emb.name}",
            y_label="value",
        )
    neighbours, similarity = nearest_neighbours(emb, index)
    same = int(np.sum(dataset.train_labels[neighbours] == label))
    st.caption(
        f"Its {len(neighbours)} nearest neighbours in {emb.name!r} (cosine similarity); {same} of them share its "
        "class. A sample whose neighbours are mostly of another class may be mislabelled; a similarity near 1 "
        "may be a duplicate."
    )
    images = [upscale(dataset.train_images[j], common.thumbnail_size()) for j in neighbours]
    captions = [
        f"#{j} · {dataset.class_names[int(dataset.train_labels[j])]} · {s:.2f}"
        for j, s in zip(neighbours, similarity, strict=True)
    ]
    common.show_images(images, captions, shown=neighbours, key="detail_neighbours_open", open_in=open_in)
