// The account pages (/verify-email, /reset-password, /login): plain DOM code calling the public
// API on this origin. No framework, no inline script (the pages' CSP allows scripts from 'self'
// only). Tokens are kept in sessionStorage, so they end with the tab.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const page = document.body.dataset.page;
  const query = new URLSearchParams(window.location.search);
  const STORE = "taskshop.tokens";

  function say(text, ok) {
    status.textContent = text;
    status.className = ok ? "ok" : "error";
    status.hidden = false;
  }

  async function api(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
      });
    } catch (e) {
      return { status: 0, ok: false, data: { detail: "The server cannot be reached; try again." } };
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (e) { data = null; }
    }
    return { status: res.status, ok: res.ok, data };
  }

  function problem(r) {
    const d = r.data || {};
    if (d.errors && d.errors.length) return d.errors.map((e) => e.message).join(" ");
    return d.detail || "Something went wrong (" + r.status + ").";
  }

  function verifyEmail() {
    const button = $("verify");
    const token = query.get("token");
    if (!token) {
      button.disabled = true;
      say("This link has no token. Open the link from the e-mail again.", false);
      return;
    }
    // Nothing happens on load: a mail scanner or a browser prefetch must not verify anything.
    button.addEventListener("click", async () => {
      button.disabled = true;
      const r = await api("POST", "/v1/auth/verify-email", { token });
      if (r.ok) {
        button.hidden = true;
        say("Thank you: your e-mail address is verified.", true);
      } else if (r.data && r.data.code === "invalid_token") {
        say("This link is invalid, expired or was already used.", false);
      } else {
        button.disabled = false;
        say(problem(r), false);
      }
    });
  }

  function resetPassword() {
    const form = $("reset");
    const token = query.get("token");
    if (!token) {
      form.hidden = true;
      say("This link has no token. Open the link from the e-mail again.", false);
      return;
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const password = $("password").value;
      if (password !== $("confirm").value) {
        say("The two passwords differ.", false);
        return;
      }
      const button = form.querySelector("button");
      button.disabled = true;
      const r = await api("POST", "/v1/auth/password/reset", { token, new_password: password });
      if (r.ok) {
        form.hidden = true;
        say("Your password is changed, and every session was signed out. You can sign in now.", true);
      } else if (r.data && r.data.code === "invalid_token") {
        form.hidden = true;
        say("This link is invalid, expired or was already used. Ask for a new one.", false);
      } else {
        button.disabled = false;
        say(problem(r), false);
      }
    });
  }

  async function showSignedIn(tokens) {
    sessionStorage.setItem(STORE, JSON.stringify(tokens));
    const me = await api("GET", "/v1/users/me", undefined, tokens.access_token);
    if (!me.ok) {
      sessionStorage.removeItem(STORE);
      say(problem(me), false);
      return;
    }
    $("signed-out").hidden = true;
    $("signed-in").hidden = false;
    $("who").textContent = "Signed in as " + me.data.email + ".";
    $("who").className = "ok";
    status.hidden = true;
  }

  function login() {
    const form = $("login");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await api("POST", "/v1/auth/login", { email: $("email").value, password: $("password").value });
      if (r.ok) await showSignedIn(r.data);
      else say(r.status === 401 ? "The e-mail or password is wrong." : problem(r), false);
    });
    $("forgot").addEventListener("click", async (ev) => {
      ev.preventDefault();
      const email = $("email").value;
      if (!email) {
        say("Type your e-mail address first.", false);
        return;
      }
      const r = await api("POST", "/v1/auth/password/forgot", { email });
      if (r.ok) say("If an account has this address, a reset link is on its way.", true);
      else say(problem(r), false);
    });
    $("logout").addEventListener("click", async () => {
      const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
      sessionStorage.removeItem(STORE);
      if (saved) await api("POST", "/v1/auth/logout", { refresh_token: saved.refresh_token });
      $("signed-in").hidden = true;
      $("signed-out").hidden = false;
      say("Signed out.", true);
    });
    // Back from "Sign in with …": the callback redirected here with a single-use code in the
    // fragment (never sent to a server, kept out of logs); drop it from the address bar at once.
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const code = fragment.get("login_code");
    if (code) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
      api("POST", "/v1/auth/oauth/exchange", { login_code: code }).then((r) => {
        if (r.ok) showSignedIn(r.data);
        else say("That sign-in did not complete (" + problem(r) + "). Try again.", false);
      });
      return;
    }
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
    if (saved) showSignedIn(saved);
  }

  if (page === "verify-email") verifyEmail();
  else if (page === "reset-password") resetPassword();
  else if (page === "login") login();
})();
