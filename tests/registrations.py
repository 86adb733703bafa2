"""A registration form as a Pflegekasse in NW fills it in, shared by the registration tests."""

from __future__ import annotations

from qprserver.accounts.registration import RegistrationForm

PFLEGEKASSE_NW = RegistrationForm(
    ik="180500016",
    institution="Pflegekasse Muster",
    contact="Erika Muster",
    email="erika@pk.example.org",
    phone="0211 1234-56",
    street="Musterweg 5",
    postcode="40210",
    city="Düsseldorf",
    roles=("recipient",),
    procedures=("QPR_0_WEB", "QPR_0_SFTP"),
)
