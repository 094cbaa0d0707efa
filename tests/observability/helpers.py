"""Reading /metrics with prometheus_client's parser, and the log of a served process."""

import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of GET /metrics by sample name: (labels, value)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``; KeyError when
    there is no sample of that name at all."""
    found = samples[name]
    return sum(value for have, value in found
               if all(have.get(key) == wanted for key, wanted in labels.items()))


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log, each asserted to be one JSON object."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line[:200]!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


def request_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("logger") == "certs.http" and "route" in line]
