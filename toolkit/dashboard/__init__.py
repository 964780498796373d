"""The Streamlit dashboard: shared helpers (``common``) and one script per page."""
