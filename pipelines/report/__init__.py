"""`tykpulse report`: a one-page HTML summary of a time range, for people who will not open a notebook.

Data through pipelines.analyst (data.py), charts with matplotlib (charts.py;
the `analyst` extra), the page as self-contained HTML (page.py).
"""

from pipelines.report.data import ReportData, fetch

__all__ = ["ReportData", "fetch"]
