/*
 * pardot-destination: Pardot's anonymous visitor tracking (pd.js) for any page, and the same
 * code as a destination plugin for Segment's analytics.js. The service serves this file at
 * /pardot.js with its settings filled in where the last line says so.
 */
(function (window, document, served) {
  "use strict";

  // Pages end up including this twice (a template and a tag manager): the first copy owns
  // pd.js, or every visit would count twice.
  if (window.PardotDestination) return;

  var NAME = "Pardot";
  var VERSION = "1.0.0";
  var currentScript = document.currentScript;
  var loading = null; // the page's one pd.js load, shared by the plain script and the plugin
  var countedHref = null; // the URL pd.js counted as a page view when it loaded

  function settings(options) {
    var o = options || {};
    var accountId = String(o.accountId || served.accountId || "");
    // pd.js and Pardot's cookie names do arithmetic on the account id.
    if (!/^[0-9]+$/.test(accountId)) {
      throw new Error("pardot-destination: accountId must be Pardot's numeric account id");
    }
    var trackerUrl = o.trackerUrl || served.trackerUrl || "https://pi.pardot.com";
    var campaignId = "campaignId" in o ? o.campaignId : served.campaignId;
    return {
      accountId: accountId,
      campaignId: campaignFromUrl() || String(campaignId || ""),
      trackerUrl: String(trackerUrl).replace(/\/+$/, ""),
    };
  }

  // The seed's rule: ?pi_campaign_id= on the page's URL beats the configured campaign. Only a
  // number can be a campaign id; anything else is a mistyped or crafted link.
  function campaignFromUrl() {
    var value = new URLSearchParams(window.location.search).get("pi_campaign_id");
    return value && /^[0-9]+$/.test(value) ? value : null;
  }

  function start(cfg) {
    if (loading) return loading;
    window.piAId = cfg.accountId;
    window.piCId = cfg.campaignId;
    window.piHostname = cfg.trackerUrl.replace(/^https?:\/\//, "");
    loading = new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.async = true;
      tag.src = cfg.trackerUrl + "/pd.js";
      tag.onload = function () {
        countedHref = window.location.href;
        resolve();
      };
      tag.onerror = function () {
        reject(new Error("pardot-destination: could not load " + tag.src));
      };
      (document.head || document.documentElement).appendChild(tag);
    });
    return loading;
  }

  // Segment's rule: "Pardot": false turns us off; "All": false leaves us on only when
  // "Pardot" is true or an options object.
  function enabled(ctx) {
    var integrations = (ctx && ctx.event && ctx.event.integrations) || {};
    var own = integrations[NAME];
    if (own === false) return false;
    return integrations.All !== false || Boolean(own);
  }

  function cookie(name) {
    var pairs = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < pairs.length; i++) {
      var eq = pairs[i].indexOf("=");
      if (pairs[i].slice(0, eq) === name) return decodeURIComponent(pairs[i].slice(eq + 1));
    }
    return null;
  }

  // Where Segment's Identify facade finds an email: traits first, then a userId that is one.
  function emailOf(event) {
    var traits = event.traits || {};
    var contextTraits = (event.context && event.context.traits) || {};
    var email = traits.email || contextTraits.email;
    if (!email && /^[^@\s]+@[^@\s]+$/.test(String(event.userId || ""))) email = event.userId;
    return email ? String(email) : "";
  }

  function isLoaded() {
    return typeof window.piTracker === "function";
  }

  function createPlugin(options) {
    var cfg = settings(options);
    var pageCalls = 0;
    // Pardot names its cookies after the account id minus 1000.
    var cookieSuffix = String(Number(cfg.accountId) - 1000);

    return {
      name: NAME,
      type: "destination",
      version: VERSION,
      isLoaded: isLoaded,
      load: function () {
        return start(cfg);
      },
      page: function (ctx) {
        // pd.js counts the page it loads on by itself; analytics.js's first page() for that
        // same page must not count it again. A single-page app that already moved on has a
        // new page to report.
        var first = pageCalls++ === 0;
        if (first && window.location.href === countedHref) return ctx;
        if (!enabled(ctx) || !isLoaded()) return ctx;
        var properties = (ctx.event && ctx.event.properties) || {};
        window.piTracker(properties.url || window.location.href);
        return ctx;
      },
      identify: function (ctx) {
        var email = emailOf((ctx && ctx.event) || {});
        var optIn = cookie("pi_opt_in" + cookieSuffix);
        if (!enabled(ctx) || !email || optIn === "false") return ctx;
        var query = {
          account_id: window.piAId || cfg.accountId,
          campaign_id: window.piCId || cfg.campaignId,
          visitor_id: cookie("visitor_id" + cookieSuffix),
          pi_opt_in: optIn,
          ver: "3",
          pi_email: email,
        };
        var params = new URLSearchParams();
        for (var key in query) {
          if (query[key] !== null && query[key] !== undefined) params.append(key, query[key]);
        }
        // An image request is what Pardot's endpoint answers (a 1x1 gif) and needs no CORS.
        new Image(1, 1).src = cfg.trackerUrl + "/analytics?" + params.toString();
        return ctx;
      },
    };
  }

  window.PardotDestination = {
    version: VERSION,
    createPlugin: createPlugin,
    plugin: served.accountId ? createPlugin() : null,
  };

  // data-autoload="false" leaves loading to analytics.js, so its consent handling decides.
  var manual = currentScript && currentScript.getAttribute("data-autoload") === "false";
  if (served.accountId && !manual) {
    // A blocked pd.js already shows as a failed request; an unhandled rejection adds noise.
    start(settings()).catch(function () {});
  }
})(window, document, /*@pardot-config*/ {});
