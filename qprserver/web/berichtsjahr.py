"""The Qb-R report year at a glance for operator accounts (role ``admin``), read-only:
the year's calendar, its counts and who is missing. Changing anything stays in the CLI.
"""

from __future__ import annotations

from starlette.responses import Response

from qprserver.accounts.enums import Role
from qprserver.qb import lists
from qprserver.qb.calendar import calendar_for
from qprserver.web.pages import Call, not_found, page, render


async def year_page(call: Call) -> Response:
    year = call.request.path_params.get("year")
    if not (isinstance(year, int) and 1990 <= year <= 2099):
        return not_found(call.request, call.visit)
    async with call.portal.db.read_session() as session:
        counts = await lists.status(session, year)
        missing = await lists.missing(session, year)
    context = {
        "year": year,
        "calendar": calendar_for(call.portal.settings.qb, year).rows(),
        "counts": counts,
        "missing": missing,
    }
    return render(call.request, "berichtsjahr.html", context, visit=call.visit)


# Digits only, so the report registration's paths under /berichtsjahr/ stay apart.
ROUTES = [("/berichtsjahr/{year:int}", page(year_page, role=Role.ADMIN), ["GET"])]
