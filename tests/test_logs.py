"""Log records of the library reach a rule's log file and the terminal."""

from __future__ import annotations

import logging

from llmbio.logs import log_to, setup_logging


def test_library_records_reach_the_rule_log_and_stderr(tmp_path, capsys):
    log_file = tmp_path / "logs" / "rule.log"
    with log_to(log_file):
        print("a stage's print")
        logging.getLogger("llmbio.attribution.trace").info("Tracing %d tokens", 7)
        logging.getLogger("llmbio.attribution.trace").debug("not at INFO")
    logging.getLogger("llmbio.x").info("after the block")
    text = log_file.read_text()
    assert "a stage's print" in text
    assert "INFO llmbio.attribution.trace: Tracing 7 tokens" in text
    assert "not at INFO" not in text and "after the block" not in text
    err = capsys.readouterr().err
    assert "Tracing 7 tokens" in err and "after the block" in err


def test_setup_logging_is_idempotent():
    logger = setup_logging()
    before = list(logger.handlers)
    assert setup_logging().handlers == before and len(before) >= 1
