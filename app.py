"""SampleSift dashboard: ``streamlit run app.py`` (listens on 127.0.0.1, see .streamlit/config.toml).

The entry point draws the data set picker in the sidebar and routes to the pages in
``toolkit/dashboard/``. Pages are thin: every number and figure they show comes from a
toolkit function that the CLI and notebooks can call too.
"""

from pathlib import Path

import streamlit as st

from toolkit.dashboard import common

PAGES = Path(__file__).resolve().parent / "toolkit" / "dashboard"

# A local icon: a material icon as favicon is fetched from the internet (an error in the console offline).
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"
st.set_page_config(page_title="SampleSift", page_icon=str(FAVICON), layout="wide")
st.session_state["_context"] = common.sidebar()


def page(name: str, title: str, icon: str, **kwargs: object) -> st.Page:
    return st.Page(PAGES / f"{name}.py", title=title, icon=icon, url_path=name, **kwargs)


navigation = st.navigation(
    {
        "Data": [page("data", "Data", ":material/dataset:", default=True)],
        "Explore": [
            page("embeddings", "Embeddings", ":material/scatter_plot:"),
            page("dimensions", "Dimensions", ":material/grid_on:"),
            page("selectors", "Selectors", ":material/filter_alt:"),
        ],
        "Experiment": [
            page("train", "Train", ":material/model_training:"),
            page("results", "Results", ":material/monitoring:"),
        ],
        "Share": [page("export", "Export", ":material/download:")],
    }
)
navigation.run()
