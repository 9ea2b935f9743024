"""Logging in and out (forms with CSRF tokens; failed logins are rate limited)."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import login_required, login_user, logout_user

from dashboard.accounts import RateLimited
from dashboard.params import parse_text, safe_next
from dashboard.views.common import names, services, viewer

bp = Blueprint("auth", __name__)
MAX_NAME_LENGTH = 64  # accounts.NAME_RE
MAX_PASSWORD_LENGTH = 1024


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html", next=safe_next(request.args.get("next"), ""))
    name = parse_text("user name", request.form.get("username", "").strip(), max_len=MAX_NAME_LENGTH)
    password = parse_text("password", request.form.get("password", ""), max_len=MAX_PASSWORD_LENGTH)
    target = safe_next(request.form.get("next"), url_for("overview.page"))
    try:
        s = services()
        user = s.accounts.login(
            name, password, s.client_address(), session_s=current_app.config["SESSION_HOURS"] * 3600
        )
    except RateLimited as exc:
        response = render_template(
            "login.html", next=target, error=str(exc).capitalize() + ".", username=name
        )
        return response, 429, {"Retry-After": str(exc.retry_after_s)}
    if user is None:
        return render_template(
            "login.html", next=target, error="Wrong user name or password.", username=name
        ), 401
    session.clear()  # a new session for the new login (no fixation)
    login_user(user)  # no remember-me cookie
    # a browser-session cookie (no Expires): it ends when the browser is closed, which matters
    # on a family's shared computer; the server ends the session after SESSION_HOURS anyway
    session.permanent = False
    return redirect(target)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    user = viewer()
    if user is not None:
        services().accounts.logout(user.session_token)
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("overview.page"))


@bp.route("/api/v1/me")
def me():
    user = viewer()
    if user is None:
        return jsonify(logged_in=False)
    directory = names()
    return jsonify(
        logged_in=True,
        name=user.name,
        role=user.role,
        meters=[{"meter": m, "name": directory.label(m)} for m in sorted(user.meters)],
    )
