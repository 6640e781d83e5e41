"""What a person sees of one video's output: the self-contained HTML report (clusters, thumbnails, map, summary)."""

from vcn.report.html import REPORT_NAME, ReportStats, render_report, write_report, write_report_with_stats

__all__ = ["REPORT_NAME", "ReportStats", "render_report", "write_report", "write_report_with_stats"]
