"""Export page: a saved selection's counts, its downloads (JSON, CSV, .npz) and an image-folder export.

Every file comes from :mod:`toolkit.export`, byte for byte what ``samplesift export`` writes.
"""

import pandas as pd
import streamlit as st

from toolkit.dashboard import common
from toolkit.export import export_bytes, export_selection
from toolkit.selection import list_selections

DOWNLOADS = (
    ("json", "JSON manifest", "application/json"),
    ("csv", "CSV table", "text/csv"),
    ("npz", "NumPy .npz", "application/octet-stream"),
)

ctx = common.context()
dataset = ctx.dataset
st.title("Export")

saved = {s.name: s for s in list_selections(dataset, workspace=ctx.workspace)}
if not saved:
    st.info("No saved selections for this data set yet: save one on the Embeddings or Selectors page.")
    st.stop()
common.restore_choice("export_selection", "selection", list(saved))
name = st.selectbox("Selection", list(saved), key="export_selection")
common.set_param("selection", name)
selection = saved[name]
cols = st.columns(3)
cols[0].metric("Samples", f"{selection.size:,}")
cols[1].metric("Share of training set", f"{100 * selection.manifest['fraction']:.2f}%")
cols[2].metric("Method", selection.method)
st.dataframe(
    pd.DataFrame(
        {
            "class": list(selection.manifest["class_counts"]),
            "samples": list(selection.manifest["class_counts"].values()),
        }
    ),
    hide_index=True,
    key="export_counts",
)

st.header("Download")
st.caption(
    "The manifest reproduces the selection (method, parameters, seed, fingerprints, versions, indices); the CSV has "
    "one row per sample (index, class, score, source file); the .npz holds the selected images and labels with the "
    "test split, and is itself a data spec (`samplesift train --data subset.npz`)."
)
with common.user_errors():
    selection.check_dataset(dataset)
download_cols = st.columns(len(DOWNLOADS))
for column, (fmt, label, mime) in zip(download_cols, DOWNLOADS, strict=True):
    column.download_button(
        label,
        # Built when clicked (an .npz of CIFAR-10 holds its 30 MB test split), not on every rerun.
        lambda fmt=fmt: export_bytes(selection, dataset, fmt),
        file_name=f"{selection.name}.{fmt}",
        mime=mime,
        on_click="ignore",
        icon=":material/download:",
        key=f"export_download_{fmt}",
    )

st.header("Image folder")
st.caption(
    "A `<class>/<image>` tree that `torchvision.datasets.ImageFolder` reads, with the manifest as `selection.json`. "
    "The folder must be new or empty; an earlier export is replaced only with *Overwrite*."
)
with st.form("export_folder_form"):
    folder = st.text_input("Folder", placeholder="/path/to/new/folder", key="export_folder")
    options = st.columns(2)
    overwrite = options[0].checkbox("Overwrite an earlier export", key="export_overwrite")
    link = options[1].checkbox(
        "Symbolic links instead of copies",
        key="export_link",
        disabled=dataset.train_files is None,
        help="Only for data sets loaded from image files.",
    )
    submitted = st.form_submit_button("Export as image folder", icon=":material/folder:")
if submitted:
    if not folder.strip():
        st.error("Give the folder to export into.", icon=":material/error:")
        st.stop()
    with common.user_errors(), st.spinner("Writing the image folder…"):
        written = export_selection(selection, dataset, folder.strip(), "folder", overwrite=overwrite, link=link)
    st.success(f"Exported {selection.size:,} images of {selection.name!r} → `{written}`", icon=":material/check:")
