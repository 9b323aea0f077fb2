"""What every Quamotion operator and sensor repeats: the connection id, ``hook_params``, ``deferrable``
and the hook, built on first use.

:class:`QuamotionTaskMixin` goes before ``BaseOperator`` or ``BaseSensorOperator`` in a class's bases;
:class:`QuamotionBaseOperator` is the mixin on ``BaseOperator``. ``__init__`` calls
:meth:`QuamotionTaskMixin.init_quamotion`, which runs the same DAG-parse-time checks of ``hook_params``
everywhere (:func:`~airflow_provider_quamotion.runs.check_hook_params`: known names, a dict and not a
string Jinja rendered, only non-secret settings when the task may defer) and accepts the former name
``hook_settings`` for one release with an ``AirflowProviderDeprecationWarning``.

Importing this module costs nothing beyond ``airflow.sdk``: the hook is imported when a task runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_quamotion.runs import DEFAULT_CONN_ID, check_hook_params, default_deferrable

if TYPE_CHECKING:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook


class QuamotionTaskMixin:
    """The connection id, ``hook_params``, ``deferrable`` and the cached hook of a Quamotion task.

    :ivar quamotion_conn_id: the Airflow connection ID (templated in every Quamotion task).
    :ivar hook_params: non-secret overrides of the connection's settings (``{"timeout": 30}``,
        ``{"retry": {"max_attempts": 2}}``, ``{"project": "acme"}``).
    :ivar deferrable: whether the task waits in the triggerer.
    """

    quamotion_conn_id: str
    hook_params: dict[str, Any]
    deferrable: bool

    def init_quamotion(
        self,
        *,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        deferrable: bool | None = False,
        may_defer: bool = True,
    ) -> None:
        """Set and check the shared arguments (at DAG-parse time; no network, no heavy import).

        :param quamotion_conn_id: the Airflow connection ID.
        :param hook_params: overrides of the connection's settings.
        :param hook_settings: the deprecated name of ``hook_params``.
        :param deferrable: wait in the triggerer; ``None``: ``[operators] default_deferrable``.
        :param may_defer: whether ``deferrable`` really sends ``hook_params`` to the triggerer (a start
            operator that does not wait never defers).
        """
        self.quamotion_conn_id = quamotion_conn_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.hook_params = check_hook_params(
            hook_params, deferrable=self.deferrable and may_defer, hook_settings=hook_settings, stacklevel=5
        )

    @property
    def hook_settings(self) -> dict[str, Any]:
        """The former name of :attr:`hook_params` (read-only; removed in the next release)."""
        return self.hook_params

    @cached_property
    def hook(self) -> QuamotionHook:
        """The sync hook with ``hook_params`` applied (imported and built on first use)."""
        return self.get_hook()

    def get_hook(self) -> QuamotionHook:
        """A new sync hook with ``hook_params`` applied (never built at DAG-parse time)."""
        from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
        from airflow_provider_quamotion.runs import hook_overrides

        return QuamotionHook(self.quamotion_conn_id, **hook_overrides(self.hook_params))


class QuamotionBaseOperator(QuamotionTaskMixin, BaseOperator):
    """A ``BaseOperator`` with :class:`QuamotionTaskMixin`'s shared arguments."""

    ui_color = "#d9ecf5"

    def __init__(self, **kwargs: Any) -> None:
        """Pass everything to ``BaseOperator``.

        Defined so that ``partial()`` reads Airflow's own defaults: a class without an ``__init__`` of
        its own gets ``BaseOperator.__init__``'s signature (``inlets=None``), and a mapped task then
        has ``inlets`` ``None`` and fails before it runs (Airflow 3.3's ``InletEventsAccessors``).

        :param kwargs: ``BaseOperator``'s arguments.
        """
        super().__init__(**kwargs)


__all__ = ["QuamotionBaseOperator", "QuamotionTaskMixin"]
