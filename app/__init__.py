"""probe's Streamlit dashboard: head reports, token and attention views, live A/B interventions.

Start it with ``probe app [DIR]``; the script is ``app/main.py``. Pure logic (report listing,
live captures, generation) lives in ``app.reports`` and ``app.live`` so it can be tested without
Streamlit; ``app/views/`` holds one module per page section.
"""
