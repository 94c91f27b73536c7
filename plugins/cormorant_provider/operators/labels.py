"""Labels: land a day's labels in the lake, and gate them with the labels suite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cormorant_provider.operators.base import CormorantOperator, fails_fast
from cormorant_provider.operators.validation import DataValidationOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class LandLabelsOperator(CormorantOperator):
    """Commit the run's day(s) of labels to ``<spec>/labels``.

    Labels that come with the features are taken from the validated feature partition; labels that
    arrive later are read from the label source (``target.source``, else the feature source) through
    its connection's hook. A scheduled run for day R lands day R - ``target.available_after_days``.

    :param conn_id: the label source's connection; default ``target.source.conn_id`` or
        ``source.conn_id`` (templated).
    """

    template_fields: Sequence[str] = (*CormorantOperator.template_fields, "conn_id")
    ui_color = "#e8daef"
    lags_behind_labels = True

    def __init__(self, *, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from airflow.sdk import BaseHook

        from cormorant.labels import label_conn_id, labels_dataset
        from cormorant.warehouse import raw_dataset

        if self.spec.labels_inline:
            inputs = [self.lake_dataset(raw_dataset(self.spec))]
        else:
            conn_id = self.conn_id or label_conn_id(self.spec)
            hook = BaseHook.get_connection(conn_id).get_hook()
            inputs = self.sql_datasets(hook, conn_id, self.spec.target.source or self.spec.source)
        return inputs, [self.lake_dataset(labels_dataset(self.spec))]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.labels import extract_labels, label_conn_id, labels_dataset, labels_from_features

        refs = []
        for partition in self.partitions(context):
            if self.spec.labels_inline:
                manifest = labels_from_features(
                    self.spec, self.lake, partition, lineage=self.lineage(context)
                )
            else:
                from airflow.providers.postgres.hooks.postgres import PostgresHook
                from airflow.sdk import BaseHook

                hook = BaseHook.get_connection(self.conn_id or label_conn_id(self.spec)).get_hook()
                manifest = extract_labels(
                    hook.get_conn,
                    self.spec,
                    partition,
                    self.lake,
                    dialect="postgres" if isinstance(hook, PostgresHook) else "generic",
                    placeholder=getattr(hook, "placeholder", "%s"),
                    lineage=self.lineage(context),
                )
            self.log.info(
                "Committed %s/ds=%s: %d label rows", labels_dataset(self.spec), partition, manifest.row_count
            )
            refs.append(
                {"partition": partition, "rows": manifest.row_count, "content_hash": manifest.content_hash}
            )
        return refs


class LabelValidationOperator(DataValidationOperator):
    """Gate the run's day(s) of labels with the spec's labels suite (the target's nulls, range and
    values): a failure fails the task at once, naming each failed expectation, and keeps the day out of
    training and performance monitoring. Emits the ``labels`` asset for the days that passed."""

    ui_color = "#f5eef8"
    lags_behind_labels = True

    def openlineage_io(self) -> tuple[list[Any], list[Any]]:
        from cormorant.labels import labels_dataset

        return [self.lake_dataset(labels_dataset(self.spec))], [
            self.lake_dataset(f"{self.spec.name}/reports/labels")
        ]

    @fails_fast
    def execute(self, context: Context) -> list[dict[str, Any]]:
        from cormorant.labels import validate_labels

        return self.gate(
            context, lambda partition: validate_labels(self.spec, self.lake, partition), "Labels of"
        )
