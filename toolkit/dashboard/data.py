"""Data page: what the chosen data set holds, its embeddings (make, compare), and background jobs."""

import numpy as np
import streamlit as st

from toolkit import jobs
from toolkit.dashboard import common
from toolkit.dashboard.detail import detail_section
from toolkit.embedding import embedding_table
from toolkit.viz.embedding import class_histogram, image_grid_items

ctx = common.context()
dataset = ctx.dataset

st.title("Data")
cols = st.columns(5)
cols[0].metric("Training images", f"{dataset.num_train:,}")
cols[1].metric("Test images", f"{dataset.num_test:,}")
cols[2].metric("Classes", dataset.num_classes)
cols[3].metric("Image size", "x".join(str(s) for s in dataset.image_shape))
cols[4].metric("Crop", dataset.default_crop)
st.caption(f"Source: `{dataset.source}` · data set key `{dataset.key}` · fingerprint `{dataset.fingerprint}`")
for note in dataset.notes:
    st.warning(note)
if dataset.skipped_files:
    with st.expander(f"{len(dataset.skipped_files)} unreadable file(s) skipped"):
        st.code("\n".join(dataset.skipped_files[:200]))

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(
        class_histogram(dataset.train_labels, dataset.class_names, title="Training images per class"),
        key="data_classes",
    )
with right:
    seed = int(st.number_input("Sample seed", value=0, step=1, key="data_seed"))
    sample = np.random.default_rng(seed).choice(dataset.num_train, size=min(24, dataset.num_train), replace=False)
    images, captions, shown = image_grid_items(dataset, sample, limit=None, size=common.thumbnail_size())
    emb = common.embedding(ctx)  # the detail view needs one (its vector, its neighbours)
    common.show_images(
        images, captions, shown=shown, key="data_grid_open", open_in="data_detail_index" if emb else None
    )
if emb is not None:
    detail_section(ctx, emb, "data")

st.header("Embeddings")
table = embedding_table(dataset, workspace=ctx.workspace)
if table.empty:
    st.info(f"No embedding of {dataset.key} yet: make one below.")
else:
    st.caption(
        "How much each embedding knows about the classes, measured once when it was made: k-NN accuracy "
        "(20 nearest training embeddings by cosine similarity, weighted votes) and a linear probe's test "
        "accuracy. Training time excludes warm-up. The sidebar picks the one every page uses."
    )
    shown = table.assign(
        knn_accuracy=100 * table["knn_accuracy"], linear_probe_accuracy=100 * table["linear_probe_accuracy"]
    )
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "knn_accuracy": st.column_config.NumberColumn("k-NN accuracy", format="%.1f %%"),
            "linear_probe_accuracy": st.column_config.NumberColumn("linear probe", format="%.1f %%"),
            "train_time_s": st.column_config.NumberColumn("training (s)", format="%.1f"),
            "embed_time_s": st.column_config.NumberColumn("embedding (s)", format="%.1f"),
        },
        key="data_embeddings",
    )
st.subheader("Make an embedding")
common.encoder_panel(ctx)

st.header("Background jobs")
recent = jobs.list_jobs(ctx.workspace)[:10]
if not recent:
    st.caption("None yet. Embeddings, UMAP maps and training runs run as background processes.")
for job in recent:
    state = job.state()
    record = job.record
    cols = st.columns([4, 1, 1])
    cols[0].markdown(f"**{record.get('label') or job.kind}** · `{job.id}` · started {record.get('created', '')}")
    cols[1].markdown(f"`{state}`")
    if state == "running" and cols[2].button("Cancel", key=f"cancel_job_{job.id}"):
        job.cancel()
        st.rerun()
