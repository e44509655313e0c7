/*
 * Aftersale's order-tracking widget.
 *
 * A shop's tracking page embeds it with the order id and the token its backend minted for
 * that order (`aftersale token ORDER_ID`, or `serving.tokens.mint`):
 *
 *   <div class="aftersale-tracking" data-aftersale-order="o11290"
 *        data-aftersale-token="v1.1767225540.…"></div>
 *   <script src="https://aftersale.example/widget/tracking.js" defer></script>
 *
 * The widget asks the service that served this script (or `data-aftersale-api`) for the
 * order's parcels (`POST /v1/tracking`) and offers (`POST /v1/recommend`), both with the
 * token, and shows them. Everything is written as text, never as HTML. When done, the
 * element's `data-state` is "ready" (or "error", with the service's message shown).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var scriptOrigin = script && script.src ? new URL(script.src).origin : "";

  function post(api, path, body) {
    return fetch(api + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) {
          throw new Error(answer.error || "the service answered " + response.status);
        }
        return answer;
      });
    });
  }

  function element(tag, className, text, field) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    if (field) node.setAttribute("data-field", field);
    return node;
  }

  function section(title) {
    var node = element("section");
    node.appendChild(element("h2", null, title));
    return node;
  }

  function capitalised(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function parcelSection(parcel, index, count) {
    var title = count > 1 ? "Parcel " + (index + 1) + " of " + count : "Your parcel";
    var node = section(title);
    node.setAttribute("data-shipment", parcel.shipment_id);
    node.appendChild(element("div", "status", parcel.status_text, "status"));
    if (parcel.delivery_window) {
      node.appendChild(
        element("div", "window", capitalised(parcel.delivery_window.text), "window")
      );
    }
    if (parcel.risk_text) {
      node.appendChild(
        element("div", "risk risk-" + parcel.band, capitalised(parcel.risk_text), "risk")
      );
    }
    return node;
  }

  function offerWords(offer) {
    if (offer.offer_type === "discount") {
      return offer.category + ": " + Math.round(offer.discount * 100) + "% off";
    }
    return offer.category + ": picked for you";
  }

  function offersSection(answer) {
    var node = section("You may also like");
    var list = element("ul", null, null, "offers");
    answer.offers.forEach(function (offer) {
      var item = element("li", "offer", offerWords(offer));
      item.setAttribute("data-category", offer.category);
      item.setAttribute("data-offer-type", offer.offer_type);
      item.setAttribute("data-discount", String(offer.discount));
      list.appendChild(item);
    });
    node.appendChild(list);
    return node;
  }

  function show(root, tracking, offers) {
    root.textContent = "";
    if (tracking.status === "not_shipped") {
      var waiting = section("Your order");
      waiting.appendChild(element("div", "status", "Not shipped yet", "status"));
      root.appendChild(waiting);
    }
    tracking.parcels.forEach(function (parcel, index) {
      root.appendChild(parcelSection(parcel, index, tracking.parcels.length));
    });
    if (offers.offers.length > 0) root.appendChild(offersSection(offers));
    root.setAttribute("data-state", "ready");
  }

  function fail(root, error) {
    root.textContent = "";
    root.appendChild(element("p", "error", "Tracking is unavailable: " + error.message, "error"));
    root.setAttribute("data-state", "error");
  }

  function start(root) {
    var api = root.getAttribute("data-aftersale-api") || scriptOrigin;
    var order = root.getAttribute("data-aftersale-order");
    var token = root.getAttribute("data-aftersale-token");
    var k = Number(root.getAttribute("data-aftersale-offers") || 3);
    root.setAttribute("data-state", "loading");
    Promise.all([
      post(api, "/v1/tracking", { order_id: order, token: token }),
      post(api, "/v1/recommend", { order_id: order, token: token, k: k }),
    ]).then(
      function (answers) {
        show(root, answers[0], answers[1]);
      },
      function (error) {
        fail(root, error);
      }
    );
  }

  function startAll() {
    document.querySelectorAll("[data-aftersale-order]").forEach(start);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
})();
