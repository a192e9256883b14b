"""House-style replies of Northwind, the fictional shop behind ``support_instructions``.

Every reply has the same shape, so a small model has one consistent thing to learn:

    GREETING  [order note]  acknowledgement  policy sentence(s)  one next step  SIGN_OFF

Policy facts live only in ``POLICIES`` and are pasted into replies verbatim, so "30 days" always
means returns and "48 hours" always means reversed charges. Each intent splits into topics, picked
by keywords in the *message template* (clean text, before typos are added); each topic has two
phrasings that differ in wording but state the same facts. Replies name only what the customer
wrote: an order number the message does not contain is never invented.
"""

from __future__ import annotations

import random
import re

SHOP = "Northwind"
GREETING = "Hi, thanks for contacting Northwind."
SIGN_OFF = "— Sam, Northwind Support"
INSTRUCTION = "Reply to this customer message as Sam from Northwind Support."

# The shop's policies. A reply states a policy only with these exact sentences; every number with a
# unit in a reply comes from here (the data card lists them).
POLICIES = {
    "dispatch": "Orders leave our warehouse within 1 working day.",
    "delivery": "Standard delivery takes 3-5 working days.",
    "returns": "You can return any item within 30 days of delivery with a free prepaid label.",
    "refunds": "Refunds go back to your original payment method within 5 working days.",
    "cancellation": "Orders can be cancelled free of charge until they ship.",
    "replacement": "Replacements for damaged, wrong or missing items are free and ship within 1 working day.",
    "double_charge": "Double charges are reversed within 48 hours.",
    "payment_hold": "A failed payment is never taken, and any pending hold is released within 48 hours.",
    "subscription": "Cancelling stops all future payments, and you keep access until the end of the period "
                    "you have paid for.",
    "address": "Delivery addresses can be changed until the order ships.",
    "reset_link": "Password reset links arrive within a few minutes and stay valid for 60 minutes.",
    "lockout": "Locked accounts unlock automatically after 30 minutes.",
    "warranty": "Every Northwind product comes with a 2-year warranty.",
    "contact": "Our phone team is on 0800 555 0199, Monday to Friday 8:00-18:00.",
    "reply_time": "Our team gets back to you within 24 hours.",
}

# intent -> topic -> (keywords in the message template that select the topic, two phrasings).
# Topics are tried in order; the last one, with no keywords, takes every other template.
# Slots: {subject} and {order_ref} (the order number and/or product the customer named), {order_for}, {plan_ref},
# {card_ref}, {charge}, {in_city}, {to_city}, {product_ref}, and {policy_name} for POLICIES.
REPLIES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, str]]]] = {
    "order_status": {
        "tracking": ((), (
            "I've looked up {subject}. {dispatch} {delivery} If it hasn't arrived by then, reply here and we'll "
            "open a trace with the courier.",
            "Happy to check on {subject}. {dispatch} {delivery} Your dispatch email has a tracking link, so please "
            "follow it there and reply here if it stops moving.",
        )),
    },
    "delivery_problem": {
        "wrong_item": (("wrong item", "someone else"), (
            "I'm sorry you received the wrong item for {subject}. {replacement} Please reply with a photo of what "
            "arrived and I'll send the right one with a prepaid label for the wrong item.",
            "Sorry about the mix-up with {subject}. {replacement} Just reply with a photo of the item you got, and "
            "we'll ship the correct one along with a prepaid label to send the other back.",
        )),
        "missing": (("nothing arrived", "missing", "only one"), (
            "I'm sorry about the missing delivery for {subject}. I've opened a trace with the courier. "
            "{reply_time} {replacement} Meanwhile, please check with neighbours and your usual safe place.",
            "Sorry that {subject} hasn't fully reached you. I've asked the courier to trace the parcel. "
            "{reply_time} {replacement} Please look out for a delivery card or a note from the driver.",
        )),
        "damaged": ((), (
            "I'm sorry {subject} didn't arrive in perfect condition. {replacement} Please reply with a photo of the "
            "damage and I'll send the replacement straight away; there's no need to return the damaged one.",
            "Sorry to hear {subject} arrived damaged or faulty. {replacement} Just reply with a photo of what you "
            "received and the replacement goes out; you can keep or recycle the damaged item.",
        )),
    },
    "cancel_order": {
        "cancel": ((), (
            "I've asked our warehouse to cancel {order_ref}. {cancellation} {refunds} If it has already shipped, "
            "simply refuse the delivery and we'll refund you once it's back with us.",
            "No problem, I've requested the cancellation of {order_ref}. {cancellation} {refunds} Watch for our "
            "confirmation email; if the parcel has already left us, just refuse it at the door.",
        )),
    },
    "cancel_subscription": {
        "cancel": ((), (
            "I've cancelled {plan_ref}. {subscription} A confirmation email is on its way, and you can check the "
            "status any time under Account > Subscriptions.",
            "Done: {plan_ref} is cancelled and won't renew. {subscription} You'll find the confirmation under "
            "Account > Subscriptions, where you can also restart it whenever you like.",
        )),
    },
    "refund_request": {
        "refund_status": (("returned", "sent back"), (
            "Sorry you're still waiting for the refund for {subject}. {refunds} We start the refund as soon as the parcel reaches our "
            "warehouse. If it's been longer, reply with your return tracking number and I'll chase it.",
            "Let me check the refund for {subject}. {refunds} The count starts when your parcel reaches our "
            "warehouse, so if it's been longer, reply with the return tracking number and I'll look into it.",
        )),
        "exchange": (("exchange",), (
            "Yes, you can exchange {subject} or get your money back. {returns} {refunds} Choose Exchange or Refund "
            "under Account > Orders to start.",
            "Of course, {subject} can be swapped or refunded. {returns} {refunds} Just pick Exchange or Refund "
            "under Account > Orders and print the label.",
        )),
        "return": ((), (
            "Of course, you can send back {subject}. {returns} {refunds} To start, open Account > Orders, choose "
            "Return and print the label.",
            "I'm sorry {subject} didn't work out. {returns} {refunds} Just start the return under Account > Orders "
            "and drop the parcel at any post office.",
        )),
    },
    "payment_issue": {
        "double_charge": (("twice",), (
            "I'm sorry you were charged twice{order_for}. {double_charge} You don't need to do anything; the extra "
            "charge drops off {card_ref} on its own.",
            "Sorry about the double payment{order_for}. {double_charge} The duplicate simply disappears from "
            "{card_ref}; if it's still showing after that, reply here with a screenshot of your statement.",
        )),
        "failed_payment": (("failing", "declined", "won't accept"), (
            "Sorry checkout gave you trouble with {card_ref}. {payment_hold} Please try again in a little while, "
            "or use another card or PayPal at checkout.",
            "I'm sorry your payment didn't go through. {payment_hold} Nothing is ordered until a payment succeeds, "
            "so please try checkout again with {card_ref} or PayPal.",
        )),
        "discount": (("discount",), (
            "Sorry the discount code didn't apply{order_for}. I've applied it now and we'll refund the difference. "
            "{refunds} There's nothing else you need to do.",
            "Good catch on the discount code{order_for}. I'll refund the difference you paid. "
            "{refunds} You'll get an email as soon as it's on its way.",
        )),
        "update_card": (("update the",), (
            "You can update {card_ref} under Account > Payment methods: add the new card, then set it as your "
            "default. New orders and renewals use the default card straight away.",
            "To change {card_ref}, go to Account > Payment methods, choose Add card and mark it as your default. "
            "You can remove the old card on the same page.",
        )),
        "unexpected_charge": ((), (
            "I understand {charge} on {card_ref} looks wrong. I've passed it to our billing team. {reply_time} "
            "If it's our mistake, you'll get a full refund. {refunds}",
            "Let's sort out {charge} on {card_ref}. Our billing team is checking it against your orders. "
            "{reply_time} Any charge that shouldn't be there is refunded in full. {refunds}",
        )),
    },
    "change_address": {
        "change": ((), (
            "Happy to change the delivery address for {subject}. {address} Please reply with the full new "
            "address{in_city}, and I'll update it straight away.",
            "Let's get {subject} to the right place. {address} Reply with the complete new address{in_city}, "
            "including the postcode, and I'll change it before it ships.",
        )),
    },
    "account_access": {
        "locked": (("locked",), (
            "Sorry your account got locked. {lockout} After that, please choose 'Forgot password' on the sign-in "
            "page to set a new password. {reset_link}",
            "I'm sorry about the lockout. {lockout} Once it's open again, use 'Forgot password' to choose a new "
            "password so it doesn't happen again. {reset_link}",
        )),
        "two_factor": (("two-factor",), (
            "Sorry the two-factor code isn't arriving. Codes go by text to the phone number on your account. "
            "Please check you have signal and tap 'Resend code'; if it still doesn't come, reply here and I'll "
            "switch you to email codes.",
            "I'm sorry your sign-in code hasn't come through. We text it to the phone number saved on your "
            "account. Tap 'Resend code' once you have signal, and reply here if it's still missing.",
        )),
        "change_email": (("change the email",), (
            "You can change the email under Account > Login details: enter the new address and click the "
            "confirmation link we send there. Until you confirm, we keep using your current email.",
            "To switch your email, open Account > Login details and type the new address. We send a confirmation "
            "link there, and the change takes effect as soon as you click it.",
        )),
        "no_account": (("doesn't exist",), (
            "Sorry for the confusion. Past orders may be linked to another email or placed as a guest, so please "
            "try 'Forgot password' with any other address you use. {reset_link}",
            "I'm sorry about that. Your earlier orders might be under a different email or a guest checkout. "
            "Reply with the email you used at checkout and I'll find the right account for you.",
        )),
        "security": (("someone else",), (
            "Good that you told us. I've signed you out on every device as a precaution. Please reset your "
            "password now with 'Forgot password'. {reset_link}",
            "You did the right thing by flagging this. I've ended every active session on your account. Please choose "
            "'Forgot password' and set a new password right away. {reset_link}",
        )),
        "app": (("logging me out",), (
            "Sorry the app keeps signing you out. Please update it to the latest version from your app store and "
            "sign in again. If it still happens, reply here and I'll look into your account.",
            "I'm sorry about the repeated sign-outs. Updating the app to the latest version usually fixes this, so "
            "please do that and sign in again. Reply here if it carries on.",
        )),
        "login": ((), (
            "Sorry you're having trouble signing in. Please use 'Forgot password' on the sign-in page or in the "
            "app. {reset_link} If the email doesn't show up, check your spam folder, then reply here.",
            "Let's get you back into your account. Tap 'Forgot password' on the sign-in page and follow the link "
            "we email you. {reset_link} No email? Check spam first, then reply here.",
        )),
    },
    "product_question": {
        "stock": (("in stock",), (
            "Good question about {product_ref}. Its product page shows live stock for every size and colour. If "
            "it's sold out, tap 'Notify me' and we'll email you the moment it's back. {dispatch}",
            "Let me help with {product_ref}. The product page always shows current stock. When it's "
            "sold out, the 'Notify me' button sends you an email as soon as it returns. {dispatch}",
        )),
        "warranty": (("warranty",), (
            "Good question about {product_ref}. {warranty} It covers any manufacturing fault, and repairs or "
            "replacements are free. To make a claim, reply here with a photo of the fault.",
            "Happy to help with {product_ref}. {warranty} If anything goes wrong, we repair or replace it for "
            "free; just reply here with a short description of the problem.",
        )),
        "shipping": (("ship to",), (
            "Yes, we deliver {product_ref}{to_city}. {dispatch} {delivery} You'll see the exact delivery date at "
            "checkout once you enter your address.",
            "Good news: {product_ref} ships{to_city}. {dispatch} {delivery} Enter your address at checkout to see "
            "the delivery date for your area.",
        )),
        "details": ((), (
            "Good question about {product_ref}. Sizes, colours, weight and full specifications are listed under "
            "'Details' on its product page. {returns} If anything is unclear, reply here and I'll check for you.",
            "Here's where to find everything about {product_ref}. The 'Details' section of its product page lists every size, "
            "colour and specification. {returns} Reply here if you still have a question.",
        )),
    },
    "speak_to_human": {
        "human": ((), (
            "Of course, I'll get you to a person. {contact} If you'd rather not call, reply here and a colleague "
            "will pick up your case. {reply_time}",
            "I understand, sometimes it's easier to talk it through. {contact} You can also reply here with a good "
            "time, and a colleague will ring you back. {reply_time}",
        )),
    },
}


def reply_topic(intent: str, template: str) -> str:
    """The topic of ``intent`` whose keywords occur in the message ``template``."""
    for topic, (keywords, _) in REPLIES[intent].items():
        if not keywords or any(k in template.lower() for k in keywords):
            return topic
    raise ValueError(f"no reply topic for '{template}'; give {intent} a topic without keywords")


def order_number(chosen: dict[str, str]) -> str | None:
    """The order number the customer wrote (``#12345``, ``ID 12345``...) as its digits, or None."""
    return re.sub(r"\D", "", chosen["order"]) if "order" in chosen else None


def _references(chosen: dict[str, str]) -> dict[str, str]:
    """Phrases that echo what the customer named, with neutral fallbacks for what they did not."""
    number, product = order_number(chosen), chosen.get("product")
    order = f"order #{number}" if number else ""
    if number and product:
        subject = f"your {product} ({order})"
    else:
        subject = order or (f"your {product}" if product else "your order")
    city = chosen.get("city")
    return {
        "subject": subject,
        "order_ref": (order or "your order") + (f" for the {product}" if product else ""),
        "order_for": f" for {order}" if order else "",
        "plan_ref": f"your {chosen['plan']}" if "plan" in chosen else "your subscription",
        "card_ref": f"your {chosen['card']}" if "card" in chosen else "your card",
        "charge": f"the {chosen['amount']} charge" if "amount" in chosen else "the charge",
        "in_city": f" in {city}" if city else "",
        "to_city": f" to {city}" if city else " to your area",
        "product_ref": f"the {product}" if product else "this product",
    }


def house_reply(intent: str, template: str, chosen: dict[str, str], rng: random.Random) -> str:
    """Northwind's reply to a message made from ``template`` with slot values ``chosen``."""
    _, phrasings = REPLIES[intent][reply_topic(intent, template)]
    body = rng.choice(phrasings).format(**POLICIES, **_references(chosen))
    number = order_number(chosen)
    # The order number came from a background sentence, not the request: still show it was read.
    note = f" I've added order #{number} to this ticket." if number and f"#{number}" not in body else ""
    return f"{GREETING}{note} {body} {SIGN_OFF}"
