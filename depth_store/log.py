"""Logging that never shows credentials.

The store layer logs to ``depth_store`` and never formats credentials. botocore, however, logs
request headers at DEBUG (the ``Authorization`` header names the access key id), so processes that
turn on DEBUG logging call :func:`quiet_aws_loggers` to keep the AWS SDK at WARNING or above.
"""

from __future__ import annotations

import logging

AWS_SDK_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def quiet_aws_loggers(level: int = logging.WARNING) -> None:
    """Keep the AWS SDK loggers at ``level`` or above, whatever the root level is."""
    for name in AWS_SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)
