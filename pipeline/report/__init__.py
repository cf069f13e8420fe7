"""An HTML report of the published labels: per dataset, success and VOC distributions, failed episodes
and, per episode, sampled frames above its progress curve and raw log P("True") per prefix."""

from pipeline.report.config import ReportConfig, ReportJob, load_job_config, threshold_origin
from pipeline.report.pages import write_report

__all__ = ["ReportConfig", "ReportJob", "load_job_config", "threshold_origin", "write_report"]
