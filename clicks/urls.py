from django.urls import path

from . import views

app_name = "clicks"

urlpatterns = [
    # The links of similar-image lists: /go/<source>/<position>/<comparison>/<variant>/<target>/,
    # the comparison being how the list was made. Links without it, from pages made before it
    # was recorded, stay valid; reverse() picks the form by the number of arguments.
    path("go/<int:source>/<int:position>/<str:comparison>/<str:variant>/<int:target>/", views.choice, name="choice"),
    path("go/<int:source>/<int:position>/<str:variant>/<int:target>/", views.choice, name="choice"),
]
