"""Registrierungen: a report registration's account (``qb/accounts.py``) sees its
registrations and changes their contact data at any time (name, contact person,
phone, e-mail), checked as at registration and audited. IK and Standort are not
changed here. Other accounts have no registrations of their own: the page is not found.
"""

from __future__ import annotations

from starlette.responses import Response

from qprserver.errors import InvalidInput, NotFound
from qprserver.qb import accounts as qb_accounts
from qprserver.web.pages import Call, address, int_param, page, render, see_other

PATH = "/berichtsjahr/registrierungen"
SAVED = "Die Kontaktdaten sind gespeichert."


async def _page(
    call: Call,
    message: str = "",
    failed: int | None = None,
    typed: qb_accounts.ContactForm | None = None,
) -> Response:
    async with call.portal.db.read_session() as session:
        registrations = await qb_accounts.registrations_of(session, call.visit.account.id)
    if not registrations:
        raise NotFound("keine Registrierungen")
    note = SAVED if "gespeichert" in call.request.query_params else ""
    context = {
        "registrations": registrations,
        "message": message,
        "failed": failed,
        "typed": typed,
        "note": note,
    }
    return render(
        call.request,
        "registrierungen.html",
        context,
        visit=call.visit,
        status=400 if message else 200,
    )


async def overview(call: Call) -> Response:
    return await _page(call)


async def change_contact(call: Call) -> Response:
    assert call.form is not None
    registration_id = int_param(call.request.path_params.get("id"))
    if registration_id is None:
        raise NotFound("keine Registrierung")
    form = qb_accounts.ContactForm(
        **{
            key: str(call.form.get(key, ""))[:300]
            for key in ("hospital", "contact", "email", "phone")
        }
    )
    try:
        async with call.portal.db.session() as session:
            await qb_accounts.change_contact(
                session,
                call.portal.clock.now(),
                call.visit.account.id,
                registration_id,
                form,
                address=address(call.request),
            )
    except InvalidInput as exc:
        return await _page(call, str(exc), registration_id, form)
    return see_other(f"{PATH}?gespeichert")


ROUTES = [
    (PATH, page(overview), ["GET"]),
    (PATH + "/{id}", page(change_contact), ["POST"]),
]
