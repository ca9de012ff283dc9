"""The admin's view of visitors' choices: a dashboard in place of a list of daily counts.

The rows are written by the flush alone (``clicks.services``), so the admin only reads them:
no add, change or delete. Staff with the view permission on them (superusers included) see
the dashboard; the admin site sends anyone else to its login.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from . import dashboard
from .models import Comparison, PairDay


@admin.register(PairDay)
class PairDayAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = dashboard.period_requested(days=request.GET.get("days"))
        comparison = dashboard.comparison_requested(comparison=request.GET.get("comparison"))
        figures = dashboard.dashboard_get(days=days, comparison=comparison)
        image_model = PairDay._meta.get_field("target").related_model
        context = {
            **self.admin_site.each_context(request),
            "title": "Visitors' choices",
            "subtitle": f"Last {days} days",
            "opts": self.model._meta,
            "image_opts": image_model._meta,
            "dashboard": figures,
            "periods": dashboard.PERIODS,
            "comparisons": [("", "all lists"), *Comparison.choices],
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/clicks/dashboard.html", context)
